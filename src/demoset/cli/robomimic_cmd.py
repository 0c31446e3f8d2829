"""`demoset robomimic-train`: robomimic's own train.py, reading its data through demoset's loader.

    demoset robomimic-train --config C.json --dataset D.hdf5 [robomimic's train.py flags]

Every flag after the subcommand that is not this command's own goes to robomimic's
train.py unchanged (`--name`, `--algo`, `--debug`, `--resume` in later releases), and
robomimic's parser checks them. train.py's DataLoader gets demoset's collate_fn unless
`--default-collate`. The work is `demoset.robomimic.run_train_script`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from demoset.errors import ConfigError, FileAccessError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "robomimic-train",
        help="run robomimic's installed train.py with demoset's loader",
        description=(
            "Run robomimic's installed scripts/train.py with demoset.robomimic.install() "
            "applied: its dataset factory builds demoset's SequenceDataset. Flags this "
            "command does not know are passed to train.py."
        ),
    )
    p.add_argument("--config", required=True, help="robomimic config JSON")
    p.add_argument("--dataset", default=None, help="HDF5 dataset (overrides the config's)")
    p.add_argument(
        "--robomimic-loader",
        action="store_true",
        help="use robomimic's own SequenceDataset instead (to compare)",
    )
    p.add_argument(
        "--default-collate",
        action="store_true",
        help="leave train.py's DataLoader on torch's default collate (demoset's collate otherwise)",
    )
    parse_known = p.parse_known_args

    def parse_passing_on(args=None, namespace=None):
        # flags this parser does not know belong to robomimic's train.py, whose own parser
        # checks them; without this argparse would reject them as unrecognised
        namespace, rest = parse_known(args, namespace)
        namespace.train_args = rest
        return namespace, []

    p.parse_known_args = parse_passing_on
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demoset import robomimic

    if not os.path.isfile(args.config):
        raise FileAccessError("no such config file", args.config)
    try:
        with open(args.config, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"not a JSON config ({exc})", args.config) from None
    argv = ["--config", args.config, *args.train_args]
    if args.dataset is not None:
        if not os.path.isfile(args.dataset):
            raise FileAccessError("no such file", args.dataset)
        argv += ["--dataset", args.dataset]
    reason = robomimic.stub_torchvision_if_missing()
    if reason is not None:
        print(
            f"demoset robomimic-train: torchvision does not import here ({reason}); using a "
            "stand-in that fails if a network needs it (ResNet18Conv, R3M, MVP, ColorRandomizer)",
            file=sys.stderr,
        )
    robomimic.run_train_script(
        argv, use_demoset=not args.robomimic_loader, fast_collate=not args.default_collate
    )
    return 0
