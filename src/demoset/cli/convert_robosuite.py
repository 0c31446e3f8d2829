"""`demoset convert robosuite RAW`: a raw robosuite file into the robomimic layout (new file)."""

from __future__ import annotations

import argparse
import os

from demoset.cli.common import add_isolation_arg


def register(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser(
        "robosuite",
        help="a raw robosuite demo.hdf5 (states, actions, model_file; env / env_info attrs)",
        description="Convert a raw file written by robosuite's collection tools (or `demoset "
        "collect`) into a NEW robomimic-layout file: env_args from the env / env_info attributes, "
        "num_samples, total, train/valid filter keys, optionally action_dict. The raw file is "
        "never modified. Observations come next, with `demoset extract-obs`.",
    )
    p.add_argument(
        "input",
        metavar="RAW",
        nargs="?",
        help="the raw robosuite .hdf5 file (or robosuite 1.0-1.3's folder with models/)",
    )
    p.add_argument("--dataset", dest="dataset_flag", help=argparse.SUPPRESS)
    p.add_argument(
        "--out",
        "--output",
        dest="out",
        default=None,
        help="the new file (default RAW_robomimic.hdf5)",
    )
    p.add_argument(
        "--val-ratio",
        "--ratio",
        dest="val_ratio",
        type=float,
        default=0.1,
        help="validation share (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/valid split (default 0)")
    p.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="do not write train/valid filter keys",
    )
    p.add_argument(
        "--action-dict",
        "--action_dict",
        dest="action_dict",
        action="store_true",
        help="add action_dict/ with relative and absolute pose actions (absolute ones replay the simulator)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_isolation_arg(p)
    p.set_defaults(func=run)


def default_output(raw: str) -> str:
    stem, ext = os.path.splitext(raw)
    return f"{stem}_robomimic{ext or '.hdf5'}"


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import preflight_input, progress_bar, progress_callback
    from demoset.convert.robosuite_layout import raw_file
    from demoset.convert.robosuite_raw import convert_robosuite_raw
    from demoset.errors import DemosetError

    raw = args.dataset_flag or args.input
    if not raw:
        raise DemosetError("no raw file given (demoset convert robosuite RAW)")
    raw = raw_file(raw)
    out = args.out or default_output(raw)
    preflight_input(args, raw)
    with progress_bar(None, "converting", unit="demo") as bar:
        report = convert_robosuite_raw(
            raw,
            out,
            val_ratio=args.val_ratio,
            seed=args.seed,
            split=args.split,
            action_dict=args.action_dict,
            overwrite=args.overwrite,
            progress=progress_callback(bar),
            make_env=_make_env if args.action_dict else None,
        )
    print(
        f"wrote {report.output}: {report.demos} demos, {report.total} transitions (raw file untouched)"
    )
    for key, demos in report.filter_keys.items():
        print(f"  filter key {key}: {len(demos)} demos")
    if report.action_dict_keys:
        print(f"  action_dict: {', '.join(report.action_dict_keys)}")
    return 0


def _make_env(env_meta):
    """The simulator for absolute pose actions (imported only when asked for)."""
    from demoset.sim import make_env

    return make_env(env_meta)
