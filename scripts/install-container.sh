#!/usr/bin/env bash
# The install steps of the container image (Dockerfile), kept here so that CI runs them outside
# Docker too: no Docker engine runs where the tests run, and steps that only a docker build ran
# would break unseen.
#
#   install-container.sh system TARGET          apt packages to build the image's venv (no-op when
#                                               they are all installed already)
#   install-container.sh llama TARGET VENV      venv with llama-cpp-python (a layer of its own:
#                                               the CUDA build is the longest step)
#   install-container.sh python TARGET VENV     the same, then the package and pillow-simd in
#                                               place of Pillow
#   install-container.sh share DIR              example config, shops, prompts to DIR/share and
#                                               this script to DIR (for the final stage)
#   install-container.sh runtime-packages VENV  the apt packages whose shared libraries the venv
#                                               needs at run time (for the slim final stage)
#   install-container.sh runtime FILE           install the packages listed in FILE (made by
#                                               runtime-packages in the build stage)
#   install-container.sh user                   the non-root user "ilid" (uid ILID_UID, 1000)
#                                               owning /data and /models
#
# TARGET is cpu or cuda. Settings (environment):
#   ILID_CUDA_ARCHITECTURES  compute capabilities for the CUDA build (default "80;86;89;90":
#                            A100, RTX 30xx/A10, RTX 40xx/L4/L40, H100/H200); no GPU is needed
#                            at build time, only the CUDA toolkit
#   ILID_PILLOW_SIMD_AVX2    1 (default on x86-64) builds pillow-simd with -mavx2; 0 = SSE4 only
#   ILID_PILLOW_SIMD_VERSION pillow-simd version (default 12.1.1.post0)
#   PYTHON311                the interpreter the venv is made from (default python3.11)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")

# Build packages; the names are the same on Debian (python:3.11-slim) and Ubuntu (nvidia/cuda).
# Pillow needs the libjpeg and zlib headers; webp and tiff keep the formats that shops serve and
# that the image tests decode. The CUDA image has no Python 3.11 of its own (Ubuntu 22.04's
# python3.11 comes from apt; python:3.11-slim has one in /usr/local).
BUILD_PACKAGES="build-essential cmake pkg-config libjpeg-dev zlib1g-dev libwebp-dev libtiff-dev"
CUDA_PYTHON_PACKAGES="python3.11 python3.11-venv python3.11-dev"

die() { echo "install-container.sh: $*" >&2; exit 2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

target_ok() {
  case "${1:-}" in cpu|cuda) ;; *) die "TARGET must be cpu or cuda, not '${1:-}'" ;; esac
}

cmd_system() {
  target_ok "${1:-}"
  # shellcheck disable=SC2086  # word splitting of the package lists is intended
  if [ "$1" = cuda ]; then apt_install $BUILD_PACKAGES $CUDA_PYTHON_PACKAGES; else apt_install $BUILD_PACKAGES; fi
}

cmd_llama() {
  target_ok "${1:-}"
  local target=$1 venv=${2:?VENV missing}
  local py=${PYTHON311:-python3.11}
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip wheel
  if [ "$target" = cuda ]; then
    export PATH=/usr/local/cuda/bin:$PATH  # nvcc, wherever the toolkit left PATH
    # Added to the CPU flags of install-llama-cpp.sh: layers left on the CPU stay fast.
    export ILID_LLAMA_EXTRA_CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${ILID_CUDA_ARCHITECTURES:-80;86;89;90}"
  fi
  # An image runs on CPUs other than the build machine's: no AVX-512 unless asked for.
  PYTHON="$venv/bin/python" ILID_LLAMA_CPU=${ILID_LLAMA_CPU:-portable} bash "$HERE/install-llama-cpp.sh"
}

cmd_python() {
  local venv=${2:?VENV missing}
  cmd_llama "$@"  # a reinstall from the kept wheel when the llama step ran before
  # Not editable: the image has no source tree.
  "$venv/bin/python" -m pip install --quiet "$SRC"
  install_pillow_simd "$venv"
}

install_pillow_simd() {
  # pillow-simd is a drop-in fork (same `PIL` package, faster resize and convert) published as
  # source only. It must replace Pillow, not sit beside it: both own site-packages/PIL. Installing
  # the package again later would pull Pillow back in (it depends on "Pillow"), so this runs last.
  local venv=$1 cc=${CC:-cc}
  local version=${ILID_PILLOW_SIMD_VERSION:-12.1.1.post0}
  if [ "${ILID_PILLOW_SIMD_AVX2:-$([ "$(uname -m)" = x86_64 ] && echo 1 || echo 0)}" = 1 ]; then
    cc="$cc -mavx2"
  fi
  "$venv/bin/python" -m pip uninstall --quiet -y pillow pillow-simd
  # No wheel cache: pip's cache key ignores CC, so an AVX2 build could be reused for a plain one.
  CC="$cc" "$venv/bin/python" -m pip install --quiet --no-cache-dir --no-binary pillow-simd \
    "pillow-simd==$version"
  "$venv/bin/python" - <<'EOF'
import PIL.features
from PIL import Image
missing = [f for f in ("jpg", "zlib", "webp", "libtiff") if not PIL.features.check(f)]
if missing:
    raise SystemExit(f"pillow-simd was built without {', '.join(missing)}: install the -dev packages")
print("pillow-simd", Image.__version__, "ok")
EOF
}

cmd_runtime_packages() {
  # The packages that own the shared libraries the venv's extensions link to, and the venv's
  # interpreter: the final stage installs only these, so it carries no compilers or headers.
  # Libraries that ldd does not find are skipped: libcuda.so.1 comes from the host's driver.
  local venv=${1:?VENV missing}
  local python
  python=$(readlink -f "$venv/bin/python")
  # An apt Python (the CUDA image): its -minimal package lacks most of the standard library.
  if dpkg -S "$python" >/dev/null 2>&1; then
    "$python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])'
  fi
  local paths
  # ldd fails on files that are not shared objects (some wheels ship such *.so* names)
  paths=$(find "$venv" -name '*.so*' -type f -print0 | { xargs -0 -r ldd 2>/dev/null || true; } \
    | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
      # merged /usr: dpkg may know a file under /lib by its /usr/lib name, or the other way round
      for p in "$lib" "$(readlink -f "$lib")"; do echo "$p"; echo "${p#/usr}"; echo "/usr$p"; done
    done | sort -u)
  # One dpkg call for all paths (one per path took seconds); unknown paths only print errors.
  # shellcheck disable=SC2086
  [ -z "$paths" ] || dpkg -S $paths 2>/dev/null | cut -d: -f1 | tr -d ' ' | tr ',' '\n' \
    | grep -v -E '^(libc6|libgcc-s1|libstdc\+\+6)$' | sort -u || true
}

cmd_share() {
  local dir=${1:?DIR missing}
  mkdir -p "$dir/share"
  # The packaged prompt as a starting point for a prompt of one's own (llm.prompt names it).
  cp -r "$SRC/config.toml" "$SRC/shops" "$SRC/ilid_async/prompts" "$dir/share/"
  cp "$HERE/install-container.sh" "$dir/install-container.sh"
}

cmd_user() {
  local uid=${ILID_UID:-1000}
  id -u ilid >/dev/null 2>&1 || useradd --uid "$uid" --create-home --shell /usr/sbin/nologin ilid
  mkdir -p /data /models
  chown ilid: /data /models
}

cmd_runtime() {
  local pkgs
  pkgs=$(cat "${1:?FILE missing}")
  # shellcheck disable=SC2086
  [ -z "$pkgs" ] || apt_install $pkgs
}

case "${1:-}" in
  system) shift; cmd_system "$@" ;;
  llama) shift; cmd_llama "$@" ;;
  python) shift; cmd_python "$@" ;;
  share) shift; cmd_share "$@" ;;
  user) shift; cmd_user ;;
  runtime-packages) shift; cmd_runtime_packages "$@" ;;
  runtime) shift; cmd_runtime "$@" ;;
  *) die "usage: install-container.sh system TARGET | llama|python TARGET VENV | share DIR |
       runtime-packages VENV | runtime FILE | user" ;;
esac
