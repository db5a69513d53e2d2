#!/bin/bash
# Prepares the end-to-end benchmark for the lent GPU machine, on this one:
# that machine has JAX, Flax, Optax, Orbax, OpenCV, Pillow and TensorBoard
# but not the read path's other packages, and no network, so their wheels
# and a small built ucf101_frames/split1 travel with the working tree, all
# of it within the 64 MiB a run carries. Writes benchmarks/device/bundle/
# (ignored by git); benchmarks/device/run.sh uses it there.
#
#   benchmarks/device/prepare.sh          # from the repo root, .venv built
#   PYTHON_VERSION=3.11 benchmarks/device/prepare.sh   # another device Python
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
# The device's python3 (KINDS.md of the device tool: Python 3.12.3).
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
BUNDLE=benchmarks/device/bundle
LIMIT=$((64 * 1024 * 1024))
# What a benchmark process imports (sys.modules after a read and a step)
# that the device lacks. Versions are this checkout's venv's, which the
# tests ran with.
BINARY=(grain array-record simplejpeg)
PURE=(ml-collections tensorflow-datasets tensorflow-metadata rarfile promise
      toml immutabledict portpicker)
# Videos of the generated dataset: every fourth is a test video, and K = 16
# needs at least 16 frames each. The steps reuse the videos; decoding costs
# per frame what it costs on UCF-101's 320 x 240 frames.
VIDEOS=${VIDEOS:-16}
VIDEO_FRAMES=${VIDEO_FRAMES:-24}

pins() {
  local name
  for name in "$@"; do
    echo "$name==$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
  done
}

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/wheels"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "$PYTHON_VERSION" --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_28_x86_64 --dest "$BUNDLE/wheels" $(pins "${BINARY[@]}")
# pip wheel, not download: promise publishes no wheel, only its source.
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$BUNDLE/wheels" \
  $(pins "${PURE[@]}")
echo "$PYTHON_VERSION" > "$BUNDLE/python_version"

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
"$PYTHON" -c "
import pathlib, sys
from benchmarks import end_to_end
end_to_end.build_generated(pathlib.Path(sys.argv[1]), int(sys.argv[2]),
                           int(sys.argv[3]))
" "$build" "$VIDEOS" "$VIDEO_FRAMES"
mkdir -p "$BUNDLE/data"
cp -r "$build/data/ucf101_frames" "$BUNDLE/data/"

bundle=$(du -sb "$BUNDLE" | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
total=$((bundle + tree))
du -sh "$BUNDLE/wheels" "$BUNDLE/data"
echo "bundle $bundle bytes + working tree $tree = $total of $LIMIT bytes (64 MiB)"
if ((total > LIMIT)); then
  echo "over the limit: lower VIDEOS or VIDEO_FRAMES" >&2
  exit 1
fi
echo "carry benchmarks/device/bundle and run benchmarks/device/run.sh there"
