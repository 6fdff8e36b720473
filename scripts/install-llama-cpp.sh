#!/usr/bin/env bash
# Builds llama-cpp-python once and keeps the wheel, then installs it into the current Python.
#
# Why a script: the build takes about 10-13 minutes on 2 cores, so the wheel is kept in a
# wheelhouse keyed by version and build flags and reused by README's commands, CI and the
# container build. pip's own wheel cache is not used for it because its key ignores CMAKE_ARGS
# (a CPU wheel would be reused for a CUDA build and the other way round).
#
# CPU flags: scripts/llama-cpu-flags.sh (this CPU's AVX2/AVX-512/VNNI, never AMX and never
# -march=native: AMX kernels crash in VMs without AMX state; ILID_LLAMA_CPU=portable for a
# build that runs on any x86-64 of the last ten years).
# GPU: ILID_LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=80;86;89;90" (no GPU is
# needed at build time, only the CUDA toolkit).
set -euo pipefail
PYTHON=${PYTHON:-python}
VERSION=${ILID_LLAMA_VERSION:-0.3.36}
DEFAULT_ARGS=$(bash "$(dirname "$0")/llama-cpu-flags.sh")
# ILID_LLAMA_EXTRA_CMAKE_ARGS adds to the CPU flags (the container's CUDA build); unset, the
# arguments and so the wheelhouse key are unchanged.
ARGS=${ILID_LLAMA_CMAKE_ARGS:-$DEFAULT_ARGS${ILID_LLAMA_EXTRA_CMAKE_ARGS:+ $ILID_LLAMA_EXTRA_CMAKE_ARGS}}
KEY=$(printf '%s|%s|%s' "$VERSION" "$ARGS" "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
WHEELHOUSE=${ILID_WHEELHOUSE:-$HOME/.cache/ilid-async/wheels}/$KEY
if ! ls "$WHEELHOUSE"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION ($ARGS); this takes several minutes, once" >&2
  mkdir -p "$WHEELHOUSE"
  CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$PYTHON" -m pip wheel --no-cache-dir --no-deps -w "$WHEELHOUSE" "llama-cpp-python==$VERSION"
fi
"$PYTHON" -m pip install --no-deps --force-reinstall "$WHEELHOUSE"/llama_cpp_python-"$VERSION"-*.whl
"$PYTHON" -m pip install "llama-cpp-python==$VERSION"  # its pure-Python dependencies
