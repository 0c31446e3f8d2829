#!/usr/bin/env bash
# The exact commands that made the bundled example dataset under examples/.
#
#   examples/lift_raw.hdf5      6 scripted Lift demos as robosuite's collection tools write them
#   examples/lift_example.hdf5  the same demos in the robomimic layout with low-dim observations
#                               and two 84x84 cameras (agentview, robot0_eye_in_hand), gzip images,
#                               with next_obs, so robomimic's loader reads it with its defaults
#
# Run from anywhere: bash scripts/make_example.sh  (takes a few minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
DS=.venv/bin/demoset
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

$DS collect --env Lift --robot Panda --demos 6 --seed 0 --out examples/lift_raw.hdf5 --overwrite
$DS convert robosuite examples/lift_raw.hdf5 --out "$TMP/lift_robomimic.hdf5" --val-ratio 0.2 --seed 0
$DS extract-obs "$TMP/lift_robomimic.hdf5" --out examples/lift_example.hdf5 \
    --camera_names agentview robot0_eye_in_hand --camera_height 84 --camera_width 84 \
    --done_mode 2 --compression gzip --workers 2 --overwrite
ls -l examples/lift_raw.hdf5 examples/lift_example.hdf5
