"""`demoset repair DATASET --out OUT`: salvage every complete demo of a damaged file.

The damaged file is only read; the repaired copy is a new file (see demoset.repair).
"""

from __future__ import annotations

import argparse

from demoset.cli.common import (
    add_dataset_arg,
    add_isolation_arg,
    dataset_path,
    print_json,
    progress_bar,
    progress_callback,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "repair",
        help="copy every complete, readable demo into a new file (the damaged file is untouched)",
        description="Write a new dataset with every complete demo of DATASET: drops a demo an "
        "interrupted writer left unfinished (/demoset_staging), and demos or filter keys that "
        "cannot be read or that point outside the file. Recomputes data/total and restricts "
        "filter keys to the demos kept. DATASET itself is only read.",
    )
    add_dataset_arg(parser)
    parser.add_argument("--out", "-o", required=True, help="path of the repaired copy")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_isolation_arg(parser)
    parser.set_defaults(func=run_repair)


def run_repair(args: argparse.Namespace) -> int:
    from demoset.repair import repair, repair_isolated

    path = dataset_path(args)
    bar = progress_bar(None, "repair", unit="demo")
    try:
        if args.isolated:
            report = repair_isolated(
                path, args.out, overwrite=args.overwrite, progress=progress_callback(bar)
            )
        else:
            report = repair(
                path, args.out, overwrite=args.overwrite, progress=progress_callback(bar)
            )
    finally:
        bar.close()
    if args.json:
        print_json(report.to_dict())
        return 0
    print(f"wrote {report.output}: {len(report.kept)} demos, {report.total} samples")
    for h5path, why in report.dropped:
        print(f"dropped {h5path}: {why}")
    for h5path, what in report.fixed:
        print(f"fixed   {h5path}: {what}")
    for name, count in sorted(report.filter_keys.items()):
        print(f"filter key {name}: {count} demos")
    if not report.dropped and not report.fixed:
        print("nothing was damaged; the copy holds everything")
    return 0
