#!/usr/bin/env bash
# The main job on the bundled example, end to end: inspect, validate, split, extract
# observations from the raw robosuite states, play back to a video, an HTML report, load
# with the SequenceDataset. Every output goes under demo_out/; the example files are not modified.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
DS=.venv/bin/demoset
PY=.venv/bin/python
OUT=demo_out
EXAMPLE=examples/lift_example.hdf5
RAW=examples/lift_raw.hdf5
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$EXAMPLE" "$OUT/example.hdf5"

echo "== 1. inspect: demoset info $OUT/example.hdf5"
$DS info "$OUT/example.hdf5"

echo
echo "== 2. validate"
$DS validate "$OUT/example.hdf5"

echo
echo "== 3. split into train/valid filter keys (20 % valid)"
$DS split "$OUT/example.hdf5" --ratio 0.2

echo
echo "== 4. extract observations from the raw robosuite states ($RAW)"
$DS convert robosuite "$RAW" --out "$OUT/lift_converted.hdf5"
$DS extract-obs "$OUT/lift_converted.hdf5" --out "$OUT/lift_extracted.hdf5" --n 2 \
    --camera_names agentview robot0_eye_in_hand --camera_height 84 --camera_width 84 \
    --done_mode 2 --compression gzip --workers 2

echo
echo "== 5. play back to videos"
$DS playback "$OUT/example.hdf5" --use-obs --video_path "$OUT/example_obs.mp4" --video_skip 1
$DS playback "$OUT/lift_extracted.hdf5" --use-actions --video_path "$OUT/replay_actions.mp4" \
    --render_image_names agentview --video_skip 2

echo
echo "== 6. look at it: plots and a self-contained HTML report"
$DS plot "$OUT/example.hdf5" --out "$OUT/plots"
$DS report "$OUT/example.hdf5" --out "$OUT/report.html"

echo
echo "== 7. load with demoset's SequenceDataset (seq_length 10, train filter key)"
$PY - "$OUT/example.hdf5" <<'EOF'
import sys

from demoset.loader import SequenceDataset

path = sys.argv[1]
ds = SequenceDataset(
    path,
    obs_keys=["robot0_eef_pos", "robot0_gripper_qpos", "object", "agentview_image", "robot0_eye_in_hand_image"],
    dataset_keys=["actions", "rewards", "dones"],
    seq_length=10,
    filter_key="train",
)
sample = ds[0]
print(f"{len(ds)} training windows from {len(ds.demos)} demos")
print("actions", sample["actions"].shape, "|", ", ".join(f"obs/{k} {v.shape}" for k, v in sample["obs"].items()))
EOF

echo
echo "outputs:"
echo "  $OUT/example.hdf5           copy of $EXAMPLE with train/valid filter keys"
echo "  $OUT/lift_converted.hdf5    $RAW in the robomimic layout (states, actions, env_args)"
echo "  $OUT/lift_extracted.hdf5    2 demos with low-dim obs and 84x84 agentview + eye-in-hand images"
echo "  $OUT/example_obs.mp4        every step of the example's stored camera images, side by side"
echo "  $OUT/replay_actions.mp4     the extracted demos replayed open-loop from their actions"
echo "  $OUT/plots/                 PNG plots: lengths, action histograms, trajectories"
echo "  $OUT/report.html            one-file HTML report (open it in a browser)"
