"""`demoset merge` and `demoset subset`: write a new file from existing ones."""

from __future__ import annotations

import argparse

from demoset.cli.common import (
    add_dataset_arg,
    add_filter_key_arg,
    dataset_path,
    progress_bar,
    progress_callback,
)
from demoset.cli.compress_cmd import add_compression_arg


def register(sub: argparse._SubParsersAction) -> None:
    merge = sub.add_parser(
        "merge",
        help="merge datasets into a new file (demos renumbered, filter keys carried over)",
        description="Merge datasets of the same environment into a new file. Demos are renumbered "
        "demo_0.. in input order; a filter key K of any input becomes K in the output, and each "
        "input's demos are listed under from_<file stem>.",
    )
    merge.add_argument("datasets", nargs="+", help="input datasets")
    merge.add_argument(
        "--out", "-o", required=True, help="output file (must not exist unless --overwrite)"
    )
    merge.add_argument("--overwrite", action="store_true")
    add_compression_arg(merge)
    merge.add_argument(
        "--allow-env-mismatch",
        action="store_true",
        help="allow differing env_kwargs (keeps the first file's)",
    )
    merge.set_defaults(func=run_merge)

    sub_p = sub.add_parser(
        "subset",
        help="copy chosen demos or a filter key into a new file",
        description="Copy chosen demos (or the demos of a filter key) into a new file; filter keys are kept, restricted to those demos.",
    )
    add_dataset_arg(sub_p)
    add_filter_key_arg(sub_p, "copy the demos of this filter key")
    sub_p.add_argument("--demos", nargs="+", default=None, help="demo names to copy")
    sub_p.add_argument("--out", "-o", required=True)
    sub_p.add_argument(
        "--renumber", action="store_true", help="name the output demos demo_0, demo_1, ..."
    )
    sub_p.add_argument("--overwrite", action="store_true")
    add_compression_arg(sub_p)
    sub_p.set_defaults(func=run_subset)


def run_merge(args: argparse.Namespace) -> int:
    from demoset.edit import merge

    with progress_bar(None, "merge", unit="demo") as bar:
        result = merge(
            args.datasets,
            args.out,
            overwrite=args.overwrite,
            allow_env_kwargs_mismatch=args.allow_env_mismatch,
            progress=progress_callback(bar),
            compression=args.compression,
        )
    n = sum(len(v) for v in result.values())
    print(f"{args.out}: {n} demos from {len(result)} files")
    return 0


def run_subset(args: argparse.Namespace) -> int:
    from demoset.edit import subset

    path = dataset_path(args)
    with progress_bar(None, "subset", unit="demo") as bar:
        demos = subset(
            path,
            args.out,
            demos=args.demos,
            filter_key=args.filter_key,
            renumber=args.renumber,
            overwrite=args.overwrite,
            progress=progress_callback(bar),
            compression=args.compression,
        )
    print(f"{args.out}: {len(demos)} demos from {path}")
    return 0
