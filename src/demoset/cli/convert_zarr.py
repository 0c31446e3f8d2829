"""`demoset convert zarr STORE --out OUT`: a diffusion_policy replay buffer (zarr store)."""

from __future__ import annotations

import argparse

from demoset.cli.common import add_split_output_args


def register(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser(
        "zarr",
        help="a diffusion_policy replay buffer (zarr store with data/ and meta/episode_ends)",
        description="Convert a diffusion_policy replay buffer (a zarr folder: data/<key> arrays of "
        "equal length, meta/episode_ends cumulative) into a new robomimic-layout file: one demo per "
        "episode, data/action -> actions, every other data key -> an observation. A store written by "
        "`demoset export zarr` gives back every value of the original file. The source is never "
        "modified.",
    )
    p.add_argument("input", metavar="STORE", help="the zarr store folder")
    add_split_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import print_filter_keys, run_split_converter
    from demoset.convert.zarr_replay import convert_zarr

    result = run_split_converter(convert_zarr, args)
    print(
        f"wrote {result.out}: {result.demos} demos, {result.steps} steps; "
        f"obs keys {', '.join(result.obs_keys)}"
    )
    if not result.restored_from_export:
        print(f"env_args: placeholder gym env {result.env_name!r} (a replay buffer names none)")
    print_filter_keys(result.filter_keys)
    return 0
