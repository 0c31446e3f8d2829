"""`demoset split`, `demoset filter-size` and `demoset mask ...`: edit filter keys in place.

These commands change only the `mask` group of the file (they say so in their help).
"""

from __future__ import annotations

import argparse

from demoset.cli.common import add_dataset_arg, add_filter_key_arg, dataset_path, print_json


def register(sub: argparse._SubParsersAction) -> None:
    split = sub.add_parser(
        "split",
        help="write train/valid filter keys (edits mask/ in place)",
        description="Split demos into train/valid filter keys. With the default seed the split equals "
        "robomimic's split_train_val.py. Writes mask/train and mask/valid, or <key>_train/<key>_valid.",
    )
    add_dataset_arg(split)
    add_filter_key_arg(
        split, "split the demos of this filter key (writes <key>_train / <key>_valid)"
    )
    split.add_argument(
        "--ratio", type=float, default=0.1, help="fraction of demos for validation (default 0.1)"
    )
    split.add_argument("--seed", type=int, default=0, help="random seed (default 0, as robomimic)")
    split.add_argument("--json", action="store_true")
    split.set_defaults(func=run_split)

    size = sub.add_parser(
        "filter-size",
        help="write a filter key with the first or N random demos (edits mask/ in place)",
        description="Write filter key <N>_demos (or <key>_<N>_demos). Random subsets with one seed are nested.",
    )
    add_dataset_arg(size)
    add_filter_key_arg(size, "choose from the demos of this filter key")
    size.add_argument(
        "--num-demos",
        "--num_demos",
        dest="num_demos",
        type=int,
        nargs="+",
        required=True,
        help="one or more sizes N",
    )
    size.add_argument(
        "--random", action="store_true", help="random demos (seeded) instead of the first N"
    )
    size.add_argument("--seed", type=int, default=0)
    size.add_argument("--name", default=None, help="filter key name (only with one size)")
    size.add_argument("--json", action="store_true")
    size.set_defaults(func=run_filter_size)

    mask = sub.add_parser(
        "mask",
        help="list, create, delete or rename filter keys",
        description="Manage filter keys under mask/.",
    )
    ops = mask.add_subparsers(dest="mask_command", metavar="ACTION")
    p = ops.add_parser("list", help="filter keys with their demo counts")
    add_dataset_arg(p)
    p.add_argument("--verbose", "-v", action="store_true", help="also list the demos")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_mask_list)
    p = ops.add_parser("create", help="create a filter key from demo names (edits mask/ in place)")
    add_dataset_arg(p)
    p.add_argument("--name", required=True)
    p.add_argument("--demos", nargs="+", required=True, help="demo names, e.g. demo_0 demo_3")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_mask_create)
    p = ops.add_parser("delete", help="delete a filter key (edits mask/ in place)")
    add_dataset_arg(p)
    p.add_argument("--name", required=True)
    p.set_defaults(func=run_mask_delete)
    p = ops.add_parser("rename", help="rename a filter key (edits mask/ in place)")
    add_dataset_arg(p)
    p.add_argument("--name", required=True, help="current name")
    p.add_argument("--to", required=True, help="new name")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_mask_rename)
    mask.set_defaults(func=lambda args: (mask.print_help(), 2)[1])


def run_split(args: argparse.Namespace) -> int:
    from demoset.masks import split_train_valid

    path = dataset_path(args)
    result = split_train_valid(path, ratio=args.ratio, seed=args.seed, filter_key=args.filter_key)
    if args.json:
        print_json(result)
    else:
        (tname, train), (vname, valid) = result.items()
        print(
            f"{path}: {len(valid)} validation demos out of {len(train) + len(valid)}: wrote mask/{tname} ({len(train)}) and mask/{vname} ({len(valid)})"
        )
    return 0


def run_filter_size(args: argparse.Namespace) -> int:
    from demoset.errors import DemosetError
    from demoset.masks import filter_by_size

    path = dataset_path(args)
    if args.name and len(args.num_demos) > 1:
        raise DemosetError("--name goes with a single --num-demos")
    out = {}
    for n in args.num_demos:
        name, demos = filter_by_size(
            path,
            n,
            mode="random" if args.random else "first",
            seed=args.seed,
            filter_key=args.filter_key,
            name=args.name,
        )
        out[name] = demos
    if args.json:
        print_json(out)
    else:
        for name, demos in out.items():
            print(f"{path}: wrote mask/{name} ({len(demos)} demos)")
    return 0


def run_mask_list(args: argparse.Namespace) -> int:
    from demoset.masks import list_filter_keys

    keys = list_filter_keys(dataset_path(args))
    if args.json:
        print_json(keys)
    elif not keys:
        print("no filter keys")
    else:
        for name, demos in keys.items():
            print(f"{name}: {len(demos)} demos" + (f": {', '.join(demos)}" if args.verbose else ""))
    return 0


def run_mask_create(args: argparse.Namespace) -> int:
    from demoset.masks import create_filter_key

    path = dataset_path(args)
    demos = create_filter_key(path, args.name, args.demos, overwrite=args.overwrite)
    print(f"{path}: wrote mask/{args.name} ({len(demos)} demos)")
    return 0


def run_mask_delete(args: argparse.Namespace) -> int:
    from demoset.masks import delete_filter_key

    path = dataset_path(args)
    delete_filter_key(path, args.name)
    print(f"{path}: deleted mask/{args.name}")
    return 0


def run_mask_rename(args: argparse.Namespace) -> int:
    from demoset.masks import rename_filter_key

    path = dataset_path(args)
    rename_filter_key(path, args.name, args.to, overwrite=args.overwrite)
    print(f"{path}: renamed mask/{args.name} to mask/{args.to}")
    return 0
