#!/bin/bash
# The end-to-end benchmark on the lent GPU machine (issue 13): bf16, K = 16,
# batches 32 and 64, 224 x 224, end to end against model-only clips/s.
# Run from the repo root there, with benchmarks/device/bundle (made by
# prepare.sh here) carried:
#
#   benchmarks/device/run.sh            # results in $OUT
#
# The packages the machine lacks are installed from the bundle's wheels
# into a folder of their own, not into the machine's Python, which stays
# as it was, nor into the bundle, which would then outgrow what a run carries.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
BUNDLE=benchmarks/device/bundle
OUT=${OUT:-/tmp/end_to_end}
ROWS=${ROWS:-'A+pool(I)+pool(F):16:32,A+pool(I)+pool(F):16:64'}
mkdir -p "$OUT"

want=$(cat "$BUNDLE/python_version")
have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ "$want" != "$have" ]]; then
  echo "the wheels are for Python $want, $PYTHON is $have: rerun prepare.sh" \
       "with PYTHON_VERSION=$have" >&2
  exit 1
fi
missing=$("$PYTHON" - "$BUNDLE/wheels" <<'PY'
import importlib.metadata
import pathlib
import sys

for wheel in sorted(pathlib.Path(sys.argv[1]).glob('*.whl')):
  try:
    importlib.metadata.distribution(wheel.name.split('-')[0])
  except importlib.metadata.PackageNotFoundError:
    print(wheel)
PY
)
site=$(mktemp -d)
if [[ -n "$missing" ]]; then
  # shellcheck disable=SC2086  # one wheel a word
  "$PYTHON" -m pip install --quiet --no-index --no-deps \
    --target "$site" $missing
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PYTHON" benchmarks/end_to_end.py --data_dir="$BUNDLE/data" --rows="$ROWS" \
  --size=224 --dtype=bfloat16 --steps=50 --input_batches=30 \
  --out="$OUT/end_to_end_h200.json" 2>&1 | tee "$OUT/end_to_end_h200.log"
