"""`demoset convert lerobot DIR --out OUT`: a LeRobot dataset folder (v2.0, v2.1, v3.0)."""

from __future__ import annotations

import argparse

from demoset.cli.common import add_split_output_args


def register(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser(
        "lerobot",
        help="a LeRobot dataset folder (codebase v2.0, v2.1 or v3.0)",
        description="Convert a LeRobot dataset folder (meta/info.json, parquet data, MP4 videos) into "
        "a new robomimic-layout file: one demo per episode, observation.<key> -> obs/<key>, "
        "observation.images.<cam> -> obs/<cam>_image (frames decoded with PyAV at each frame's "
        "timestamp), action -> actions, next.reward -> rewards, next.done -> dones, the task as "
        "ep_meta 'lang', train/valid filter keys. env_args is a gym-type placeholder unless the "
        "folder was written by `demoset export lerobot`, whose values all come back. The source is "
        "never modified.",
    )
    p.add_argument("input", metavar="DIR", help="the LeRobot dataset folder")
    add_split_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import print_filter_keys, run_split_converter
    from demoset.convert.lerobot_import import convert_lerobot

    result = run_split_converter(convert_lerobot, args)
    print(
        f"wrote {result.out}: {result.demos} demos, {result.frames} frames from a LeRobot "
        f"{result.codebase_version} dataset at {result.fps} fps; obs keys {', '.join(result.obs_keys)}"
    )
    if result.restored_from_export:
        print("restored demo names, attributes, env_args and filter keys from meta/demoset.hdf5")
    else:
        print(f"env_args: placeholder gym env {result.env_name!r} (LeRobot names no environment)")
    print_filter_keys(result.filter_keys)
    return 0
