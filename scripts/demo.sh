#!/usr/bin/env bash
# The main job on the bundled example dataset: inspect, validate, split, load.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
DS=.venv/bin/demoset
OUT=demo_out
mkdir -p "$OUT"
EXAMPLE=$(ls examples/*.hdf5 | head -n 1)
cp "$EXAMPLE" "$OUT/example.hdf5"
echo "== demoset info $OUT/example.hdf5"
$DS info "$OUT/example.hdf5"
echo "== demoset validate"
$DS validate "$OUT/example.hdf5"
echo "== demoset split --ratio 0.2"
$DS split "$OUT/example.hdf5" --ratio 0.2
echo
echo "outputs: $OUT/example.hdf5 (a copy of $EXAMPLE with train/valid filter keys)"
