#!/usr/bin/env bash
# Sets up everything pasnet_jax needs on a fresh Debian/Ubuntu machine:
# the RAR readers used by the dataset builders, and a virtual environment
# in .venv with the package, the converters and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v bsdtar >/dev/null 2>&1 || need_apt+=(libarchive-tools)
command -v unrar-free >/dev/null 2>&1 || command -v unrar >/dev/null 2>&1 || need_apt+=(unrar-free)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need_apt[*]} (RAR archive readers)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} (needed to read UCF-101/HMDB-51 RAR archives)" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: ready (.venv)"
