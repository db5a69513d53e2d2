#!/usr/bin/env bash
# Sets up pasnet_jax on a fresh Debian/Ubuntu machine, in a virtual
# environment in .venv:
#   bash scripts/setup.sh          what the tests need: the package, the
#                                  converters (PyTorch's CPU build), the test
#                                  tools and bsdtar, which reads the
#                                  UCF-101/HMDB-51 RAR archives
#   bash scripts/setup.sh --demo   the package alone, enough for the demo
set -euo pipefail
cd "$(dirname "$0")/.."

mode=tests
case "${1:-}" in
  '') ;;
  --demo) mode=demo ;;
  *) echo "usage: bash scripts/setup.sh [--demo]" >&2; exit 2 ;;
esac

as_root_apt_get() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  echo "setup: installing $*"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# rarfile streams compressed RAR members through bsdtar or RARLAB's unrar
# (pasnet_jax/data/archives.py); unrar-free cannot, and the tests read RARs.
has_rar_unpacker() {
  command -v bsdtar >/dev/null 2>&1 && return 0
  command -v unrar >/dev/null 2>&1 || return 1
  case "$(unrar 2>&1 || true)" in *UNRAR*) return 0 ;; *) return 1 ;; esac
}
if [ "$mode" = tests ] && ! has_rar_unpacker; then
  if ! as_root_apt_get libarchive-tools; then
    echo "setup: bsdtar is missing; install it with" \
      "\`sudo apt-get install libarchive-tools\` and run this again" >&2
    exit 1
  fi
fi

# Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in python3-venv.
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  if ! as_root_apt_get python3-venv; then
    echo "setup: python3 cannot create virtual environments; install" \
      "\`sudo apt-get install python3-venv\` and run this again" >&2
    exit 1
  fi
fi

python3 -m venv .venv
pip=(.venv/bin/python -m pip)
"${pip[@]}" install -q --upgrade pip

# The first wheel of PyTorch's CPU build for this interpreter and machine in
# a folder pip is configured to find links in, if any.
local_cpu_torch_wheel() {
  local tag links dir
  tag=$(.venv/bin/python -c \
    'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  links=$({ "${pip[@]}" config list 2>/dev/null |
              sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p"
            echo "${PIP_FIND_LINKS:-}"; } | tr ' ' '\n')
  for dir in $links; do
    dir=${dir#file://}
    [ -d "$dir" ] || continue
    ls "$dir"/torch-*+cpu-"$tag"-"$tag"-*"$(uname -m)".whl 2>/dev/null || true
  done | sort -V | tail -n 1
}

# The tests and converters only read checkpoints, for which the CPU build
# of torch does; PyPI's torch for Linux is the CUDA build, several GB with
# its nvidia packages. Once one torch is installed, the test extra keeps it.
if [ "$mode" = tests ] && ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  wheel=$(local_cpu_torch_wheel)
  if [ -n "$wheel" ]; then
    echo "setup: installing torch from $wheel"
    "${pip[@]}" install -q "$wheel"
  else
    "${pip[@]}" install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

if [ "$mode" = tests ]; then
  "${pip[@]}" install -q -e '.[test]'
else
  "${pip[@]}" install -q -e .
fi
echo "setup: ready for the $mode (.venv)"
