#!/usr/bin/env bash
# Rebuilds the old-robosuite fixtures in tests/fixtures/oldsuite/ from the real old stack:
#   1. make_venv.sh: robosuite 1.4.1 + mujoco 2.3.7 + numpy<2 + robomimic 0.3.0 in its own venv;
#   2. record_v141.py: 3 scripted Lift/Panda OSC_POSE demos (48 steps) with robosuite 1.4.1's
#      DataCollectionWrapper and gather_demonstrations_as_hdf5 -> v141_raw.hdf5;
#   3. robomimic 0.3.0's convert_robosuite.py (in place, on a copy) and dataset_states_to_obs.py
#      (agentview + robot0_eye_in_hand, 84x84, done_mode 2, OSMesa) -> v141_robomimic_obs.hdf5
#      (compacted: gzip, no next_obs frames);
#   4. the robosuite 1.0-1.3 raw layout built from the same recording -> v13_layout/.
# Takes about two minutes after the venv exists. Usage: bash scripts/old_stack/build_fixture.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=scripts/old_stack
OUT=${1:-tests/fixtures/oldsuite}
VENV=${DEMOSET_OLD_STACK:-$HOME/.cache/demoset/old-stack}
export MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa PYNPUT_BACKEND=dummy
bash "$HERE/make_venv.sh"
PY="$VENV/bin/python"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" "$HERE/record_v141.py" "$WORK/raw" --demos 3 --steps 48 --seed 0
cp "$WORK/raw/demo.hdf5" "$WORK/converted.hdf5"
"$PY" "$SITE/robomimic/scripts/conversion/convert_robosuite.py" --dataset "$WORK/converted.hdf5"
"$PY" "$SITE/robomimic/scripts/dataset_states_to_obs.py" --dataset "$WORK/converted.hdf5" \
    --output_name extracted.hdf5 --camera_names agentview robot0_eye_in_hand \
    --camera_height 84 --camera_width 84 --done_mode 2
mkdir -p "$OUT"
rm -rf "$OUT/v13_layout"
cp "$WORK/raw/demo.hdf5" "$OUT/v141_raw.hdf5"
"$PY" "$HERE/compact_fixture.py" reference "$WORK/extracted.hdf5" "$OUT/v141_robomimic_obs.hdf5"
"$PY" "$HERE/compact_fixture.py" layout13 "$WORK/raw/demo.hdf5" "$OUT/v13_layout"
du -sh "$OUT"/*
