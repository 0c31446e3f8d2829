"""`demoset convert minari SRC --out OUT`: a Minari dataset (HDF5 storage)."""

from __future__ import annotations

import argparse
import os

from demoset.cli.common import add_isolation_arg


def register(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser(
        "minari",
        help="a Minari dataset (folder, main_data.hdf5, or dataset id)",
        description="Convert a Minari dataset (HDF5 storage) into a new robomimic-layout file: one demo "
        "per episode, obs = observations[:-1], next_obs = observations[1:], dones = terminations. "
        "SRC is a dataset folder, its main_data.hdf5, or a dataset id looked up under "
        "$MINARI_DATASETS_PATH (default ~/.minari/datasets). The source is never modified.",
    )
    p.add_argument(
        "input", metavar="SRC", help="Minari dataset folder, main_data.hdf5, or dataset id"
    )
    p.add_argument(
        "--out", "--output", dest="out", required=True, help="the new robomimic-layout file"
    )
    p.add_argument(
        "--infos-as-obs", action="store_true", help="turn numeric infos into observation keys"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_isolation_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import preflight_input, progress_bar, progress_callback
    from demoset.convert.minari import MAIN_FILE, convert_minari, find_minari_data

    preflight_input(args, os.path.join(find_minari_data(args.input), MAIN_FILE))
    with progress_bar(None, "converting", unit="episode") as bar:
        result = convert_minari(
            args.input,
            args.out,
            infos_as_obs=args.infos_as_obs,
            overwrite=args.overwrite,
            progress=progress_callback(bar),
        )
    print(
        f"wrote {result.out}: {result.demos} demos, {result.transitions} transitions from "
        f"{result.dataset_id}, obs keys {', '.join(result.obs_keys)}, env {result.env_name}"
    )
    if result.image_keys and not result.restored_from_export:
        print(f"images decoded from Minari's JPEG storage: {', '.join(result.image_keys)}")
    return 0
