"""`demoset export lerobot DATASET --out DIR`: a LeRobot dataset folder (v3.0 or v2.1)."""

from __future__ import annotations

import argparse
import math

from demoset.cli.common import add_dataset_arg, add_filter_key_arg


def register(targets: argparse._SubParsersAction) -> None:
    from demoset.convert.video_av import CODECS, DEFAULT_CODEC

    p = targets.add_parser(
        "lerobot",
        help="a LeRobot dataset folder (parquet + MP4 video) that LeRobotDataset reads",
        description="Write a LeRobot dataset (codebase v3.0, or v2.1): obs/<key> -> observation.<key> "
        "(and observation.state, the float32 concatenation of the low-dim keys), camera keys -> "
        "MP4 video encoded with PyAV, actions -> action, rewards -> next.reward, dones -> next.done, "
        "the ep_meta 'lang' as the task. The PSNR of the decoded frames is reported; h264-lossless "
        "keeps every pixel. What LeRobot has no field for (states, model_file, filter keys, "
        "env_args, next_obs) is kept in meta/demoset.hdf5, so `demoset convert lerobot` gives back "
        "the original values.",
    )
    add_dataset_arg(p)
    p.add_argument("--out", "--output", dest="out", required=True, help="the dataset folder")
    p.add_argument(
        "--fps", type=int, default=20, help="frames per second of the timestamps (default 20)"
    )
    p.add_argument(
        "--video-codec",
        default=DEFAULT_CODEC,
        choices=list(CODECS),
        help=f"video codec (default {DEFAULT_CODEC}; h264-lossless keeps every pixel)",
    )
    p.add_argument(
        "--crf", type=int, default=None, help="quality of a lossy codec (lower is better)"
    )
    p.add_argument(
        "--codebase-version", default="v3.0", choices=["v3.0", "v2.1"], help="LeRobot layout"
    )
    p.add_argument("--task", default=None, help="task text for demos without an ep_meta 'lang'")
    p.add_argument(
        "--state-keys",
        default=None,
        help="comma-separated low-dim keys for observation.state (default: every float key; "
        "'' for none)",
    )
    add_filter_key_arg(p, "export only the demos of this filter key")
    p.add_argument("--overwrite", action="store_true", help="replace the folder if it exists")
    p.set_defaults(func=run)


def _db(value: float) -> str:
    return "exact (lossless)" if math.isinf(value) else f"{value:.2f} dB"


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import options_of, run_export
    from demoset.convert.lerobot_export import export_lerobot

    state_keys = None
    if args.state_keys is not None:
        state_keys = [k for k in args.state_keys.split(",") if k]
    options = options_of(args, "fps", "video_codec", "crf", "codebase_version", "task")
    result = run_export(export_lerobot, args, state_keys=state_keys, **options)
    print(
        f"wrote LeRobot {result.codebase_version} dataset {result.dataset_dir}: {result.episodes} "
        f"episodes, {result.frames} frames at {result.fps} fps, {result.bytes / 1e6:.2f} MB"
    )
    for key, video in result.videos.items():
        print(
            f"  {video.feature} ({key}): {result.video_codec}, {video.bytes / 1e6:.2f} MB, "
            f"PSNR {_db(video.psnr)} (worst frame {_db(video.min_frame_psnr)})"
        )
    if result.extra_obs_keys:
        print(
            "kept only in meta/demoset.hdf5 (no LeRobot feature): "
            + ", ".join(result.extra_obs_keys)
        )
    return 0
