"""`demoset export zarr DATASET --out STORE`: a diffusion_policy replay buffer."""

from __future__ import annotations

import argparse

from demoset.cli.common import add_dataset_arg, add_filter_key_arg


def register(targets: argparse._SubParsersAction) -> None:
    p = targets.add_parser(
        "zarr",
        help="a diffusion_policy replay buffer (zarr store: data/<key>, meta/episode_ends)",
        description="Write a zarr (format 2) store in diffusion_policy's replay-buffer layout: "
        "data/action and data/<obs key> arrays of equal length, meta/episode_ends cumulative; images "
        "one frame per chunk, everything compressed losslessly (Blosc zstd). rewards, dones, states, "
        "action_dict, next_obs and the attributes are kept too, so `demoset convert zarr` gives back "
        "every value.",
    )
    add_dataset_arg(p)
    p.add_argument("--out", "--output", dest="out", required=True, help="the store folder (.zarr)")
    add_filter_key_arg(p, "export only the demos of this filter key")
    p.add_argument("--overwrite", action="store_true", help="replace the store if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import run_export
    from demoset.convert.zarr_replay import export_zarr

    result = run_export(export_zarr, args)
    print(
        f"wrote replay buffer {result.path}: {result.episodes} episodes, {result.steps} steps, "
        f"{len(result.data_keys)} data arrays, {result.bytes / 1e6:.2f} MB"
    )
    return 0
