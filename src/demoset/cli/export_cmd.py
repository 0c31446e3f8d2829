"""`demoset export minari DATASET --out DIR_or_NAME`: leave for other tools."""

from __future__ import annotations

import argparse
import importlib

from demoset.cli.common import add_dataset_arg, add_filter_key_arg

# further export targets, each registering itself from its own module
EXPORT_MODULES = ["demoset.cli.export_lerobot", "demoset.cli.export_zarr"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="write a dataset in another layout (Minari, LeRobot, zarr); the source is untouched",
        description="Export a robomimic-layout dataset to another layout.",
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET")
    p = targets.add_parser(
        "minari",
        help="a Minari dataset (HDF5 storage) that minari.load_dataset reads",
        description="Write a Minari dataset. --out is a Minari dataset id such as robomimic/lift-v0 "
        "(written under $MINARI_DATASETS_PATH, default ~/.minari/datasets) or a folder path (the id is "
        "then --dataset-id or the folder name plus -v0). What Minari has no field for (states, "
        "model_file, filter keys, env_args) is kept in a robomimic group so `demoset convert minari` "
        "gives back the original values.",
    )
    add_dataset_arg(p)
    p.add_argument(
        "--out", "--output", dest="out", required=True, help="Minari dataset id or folder"
    )
    p.add_argument("--dataset-id", default=None, help="dataset id to record when --out is a folder")
    add_filter_key_arg(p, "export only the demos of this filter key")
    p.add_argument(
        "--exact-images",
        action="store_true",
        help="also keep raw image frames (Minari stores images as lossy JPEG)",
    )
    p.add_argument("--description", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace the dataset if it exists")
    p.set_defaults(func=run_minari)
    for name in EXPORT_MODULES:
        importlib.import_module(name).register(targets)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def run_minari(args: argparse.Namespace) -> int:
    from demoset.cli.common import options_of, run_export
    from demoset.convert.minari import export_minari

    options = options_of(args, "dataset_id", "exact_images", "description")
    result = run_export(export_minari, args, **options)
    print(
        f"wrote Minari dataset {result.dataset_id} at {result.dataset_dir}: "
        f"{result.episodes} episodes, {result.steps} steps"
    )
    if result.image_keys:
        kept = " (raw frames kept too)" if result.exact_images else ""
        print(f"images stored as JPEG: {', '.join(result.image_keys)}{kept}")
    return 0
