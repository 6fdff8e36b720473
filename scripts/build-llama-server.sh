#!/usr/bin/env bash
# Builds llama.cpp's llama-server once, from the very llama.cpp sources that the pinned
# llama-cpp-python sdist vendors, and prints the binary's path (the only line on stdout).
#
# Why the sdist: benchmarks/bench_label.py compares the engine with llama-server, and the
# comparison is only fair when both run the same llama.cpp revision with the same CPU flags.
# The CPU flags are install-llama-cpp.sh's (scripts/llama-cpu-flags.sh). The binary is kept
# under a key of version and flags and reused; the build takes a few
# minutes on 2 cores. No network at build time: LLAMA_CURL=OFF (the server loads local files).
set -euo pipefail
PYTHON=${PYTHON:-python3}
VERSION=${ILID_LLAMA_VERSION:-0.3.36}
CPU_ARGS=$(bash "$(dirname "$0")/llama-cpu-flags.sh")
ARGS="$CPU_ARGS -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release"
KEY=$(printf '%s|%s' "$VERSION" "$ARGS" | sha256sum | cut -c1-16)
DEST=${ILID_LLAMA_SERVER_CACHE:-$HOME/.cache/ilid-async/llama-server}/$KEY
BINARY=$DEST/llama-server
if [ -x "$BINARY" ]; then
  echo "$BINARY"
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "building llama-server from llama-cpp-python $VERSION's llama.cpp ($CPU_ARGS); once, several minutes" >&2
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION" >&2
tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
SOURCE=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp
# shellcheck disable=SC2086  # ARGS is a list of flags
cmake -S "$SOURCE" -B "$WORK/build" $ARGS >&2
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  cmake --build "$WORK/build" --config Release --target llama-server >&2
# Copy, then rename: a build interrupted half-way never leaves a binary that looks finished.
mkdir -p "$DEST"
cp "$WORK/build/bin/llama-server" "$BINARY.partial"
mv "$BINARY.partial" "$BINARY"
echo "$BINARY"
