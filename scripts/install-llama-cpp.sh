#!/usr/bin/env bash
# Builds llama-cpp-python once and keeps the wheel, then installs it into the current Python.
#
# Why a script: the build takes minutes on 2 cores, so the wheel is kept in a wheelhouse keyed
# by version and build flags and reused by README's commands, CI and the container build. pip's
# own wheel cache is not used for it because its key ignores CMAKE_ARGS (a CPU wheel would be
# reused for a CUDA build and the other way round).
#
# Only what the Python package loads is built: libllama and libggml. LLAVA_BUILD=OFF leaves out
# libmtmd (vision models; llama_cpp imports it only for their chat handlers) and llama-slim.cmake
# leaves out libllama-common, which llama-cpp-python builds but never ships or loads: 87 of the
# 199 objects, 2 min 30 s instead of 6 min on 2 cores (see the README).
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
SLIM="$(cd "$(dirname "$0")" && pwd)/llama-slim.cmake"
# The key names the slim file by its content, not its path: every checkout shares the wheel.
KEY=$(printf '%s|%s|%s|%s' "$VERSION" "$ARGS" "$(sha256sum < "$SLIM" | cut -c1-16)" \
  "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
WHEELHOUSE=${ILID_WHEELHOUSE:-$HOME/.cache/ilid-async/wheels}/$KEY
if ! ls "$WHEELHOUSE"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION ($ARGS); this takes several minutes, once" >&2
  mkdir -p "$WHEELHOUSE"
  CMAKE_ARGS="$ARGS -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_INCLUDE_BEFORE=$SLIM" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$PYTHON" -m pip wheel --no-cache-dir --no-deps -w "$WHEELHOUSE" "llama-cpp-python==$VERSION"
fi
"$PYTHON" -m pip install --no-deps --force-reinstall "$WHEELHOUSE"/llama_cpp_python-"$VERSION"-*.whl
"$PYTHON" -m pip install "llama-cpp-python==$VERSION"  # its pure-Python dependencies
