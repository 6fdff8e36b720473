#!/usr/bin/env bash
# Sets up ilid-async in ./.venv: Python 3.11, llama-cpp-python (built once, wheel kept; see
# install-llama-cpp.sh), the package itself and its test tools. Safe to run again: it reuses
# what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON311:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip wheel
PYTHON=.venv/bin/python bash scripts/install-llama-cpp.sh
.venv/bin/python -m pip install --quiet -e ".[test]"
