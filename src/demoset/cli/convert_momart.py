"""`demoset convert momart IN --out OUT` (or `--in-place`): check a MOMART file, add splits."""

from __future__ import annotations

import argparse

from demoset.cli.common import add_isolation_arg


def register(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser(
        "momart",
        help="a MOMART dataset (already robomimic layout): validate and add missing splits",
        description="Validate a MOMART dataset (robomimic layout, env type 3) and add the train/valid "
        "filter keys when missing. Writes a new file (a copy) with --out; --in-place edits only the "
        "mask group of IN and copies no image.",
    )
    p.add_argument("input", metavar="IN", help="the MOMART .hdf5 file")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out", "--output", dest="out", help="write a new file (the source is untouched)"
    )
    where.add_argument(
        "--in-place",
        action="store_true",
        help="add the filter keys to IN itself (edits only mask/)",
    )
    p.add_argument("--val-ratio", "--ratio", dest="val_ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0, as robomimic)")
    p.add_argument(
        "--any-type", action="store_true", help="accept env_args of another type than 3 (iGibson)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_isolation_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import preflight_input, progress_bar, progress_callback
    from demoset.convert.momart import convert_momart

    preflight_input(args, args.input)
    with progress_bar(None, "copying", unit="B") as bar:
        result = convert_momart(
            args.input,
            out=None if args.in_place else args.out,
            in_place=args.in_place,
            val_ratio=args.val_ratio,
            seed=args.seed,
            overwrite=args.overwrite,
            require_momart_type=not args.any_type,
            progress=progress_callback(bar),
        )
    for warning in result.warnings:
        print(f"warning: {warning}")
    if result.added_filter_keys:
        added = ", ".join(f"{k} ({v} demos)" for k, v in result.added_filter_keys.items())
    else:
        added = "nothing (train/valid already there)"
    where = "in place" if result.in_place else "to a new file"
    print(
        f"{result.out}: {result.demos} demos, {result.transitions} transitions valid; added {added} {where}"
    )
    return 0
