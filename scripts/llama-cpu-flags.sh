#!/usr/bin/env bash
# Prints the CMake CPU flags for llama.cpp builds (llama-cpp-python's wheel and the benchmark's
# llama-server share them, so both run the same kernels).
#
# ILID_LLAMA_CPU=host (default): AVX2/FMA/F16C plus the AVX-512 and VNNI extensions this machine's
# CPU has (on a 2-core Sapphire Rapids VM: prompts about 1.35x faster than AVX2 alone). Never
# -march=native and never AMX: ggml's AMX kernels crash with SIGSEGV in VMs that do not grant
# AMX state. The wheel is keyed by these flags, so a machine with another CPU builds its own.
# ILID_LLAMA_CPU=portable: AVX2/FMA/F16C only, for a build that runs on any x86-64 of the last
# ten years (the container image).
set -euo pipefail
case "$(uname -m)" in
  x86_64) ;;
  *) echo "-DGGML_NATIVE=OFF"; exit 0 ;;
esac
FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
MODE=${ILID_LLAMA_CPU:-host}
case "$MODE" in
  portable) ;;
  host)
    CPU=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    has() { for flag in "$@"; do [[ "$CPU" == *" $flag "* ]] || return 1; done; }
    if has avx512f avx512bw avx512vl avx512dq avx512cd; then
      FLAGS="$FLAGS -DGGML_AVX512=ON"
      has avx512vbmi && FLAGS="$FLAGS -DGGML_AVX512_VBMI=ON"
      has avx512_vnni && FLAGS="$FLAGS -DGGML_AVX512_VNNI=ON"
      has avx512_bf16 && FLAGS="$FLAGS -DGGML_AVX512_BF16=ON"
    fi
    has avx_vnni && FLAGS="$FLAGS -DGGML_AVX_VNNI=ON"
    ;;
  *) echo "ILID_LLAMA_CPU must be host or portable, not '$MODE'" >&2; exit 2 ;;
esac
echo "$FLAGS"
