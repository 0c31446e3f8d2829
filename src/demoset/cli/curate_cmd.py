"""`demoset edit ...`: curation edits, each writing a new file and leaving the source as it is."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from demoset.cli.common import (
    add_filter_key_arg,
    dataset_path,
    options_of,
    preflight_input,
    progress_bar,
    progress_callback,
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="the source dataset (read only)")
    p.add_argument("--out", "-o", required=True, help="the new file (the source is not changed)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "edit",
        help="curate a dataset into a new file: remove demos, trim, rename/drop/add keys, ...",
        description="Each edit writes a new file (atomically) and leaves the source untouched. "
        "Filter keys are carried over and restricted to the demos that remain; total, "
        "num_samples and next_obs stay consistent.",
    )
    ops = parser.add_subparsers(dest="edit_op", metavar="EDIT", required=True)

    p = ops.add_parser("remove-demos", help="leave out demos by name, filter key or condition")
    _common(p)
    p.add_argument("--demos", nargs="+", default=None, help="demo names to remove")
    add_filter_key_arg(p, "remove the demos of this filter key")
    p.add_argument("--shorter-than", type=int, default=None, metavar="N")
    p.add_argument("--longer-than", type=int, default=None, metavar="N")
    p.add_argument(
        "--no-success", action="store_true", help="remove demos whose rewards never reach success"
    )
    p.add_argument("--success-reward", type=float, default=1.0, help="reward that means success")
    p.set_defaults(func=run_remove)

    p = ops.add_parser("trim", help="cut frames at the start and/or end of demos")
    _common(p)
    p.add_argument("--start", type=int, default=0, help="frames to cut at the start")
    p.add_argument("--end", type=int, default=0, help="frames to cut at the end")
    p.add_argument(
        "--idle-start", action="store_true", help="cut leading frames where nothing changes"
    )
    p.add_argument(
        "--idle-end", action="store_true", help="cut trailing frames where nothing changes"
    )
    p.add_argument("--idle-tol", type=float, default=1e-6, help="largest change counted as none")
    p.add_argument("--demos", nargs="+", default=None, help="trim only these demos")
    p.set_defaults(func=run_trim)

    for op, helptext in (
        ("rename-key", "rename an array in every demo"),
        ("drop-key", "drop an array from every demo"),
    ):
        p = ops.add_parser(op, help=helptext)
        _common(p)
        p.add_argument("key", help="the key (an observation key unless --group says otherwise)")
        if op == "rename-key":
            p.add_argument("new", help="its new name")
        p.add_argument(
            "--group",
            choices=("obs", "action_dict", "dataset"),
            default="obs",
            help="obs (with next_obs), action_dict, or dataset (arrays directly under a demo)",
        )
        p.set_defaults(func=run_rename if op == "rename-key" else run_drop)

    p = ops.add_parser("add-key", help="add an observation computed by a Python function")
    _common(p)
    p.add_argument("name", help="the new observation key")
    p.add_argument(
        "--from",
        dest="function",
        required=True,
        metavar="MODULE:FUNCTION",
        help="a function of a demo's arrays (a mapping) returning one row per step",
    )
    p.set_defaults(func=run_add)

    p = ops.add_parser("relabel", help="recompute rewards and/or dones from success")
    _common(p)
    p.add_argument(
        "--rewards", choices=("sparse",), default=None, help="1 at success steps, else 0"
    )
    p.add_argument(
        "--dones",
        choices=("success", "last", "both"),
        default=None,
        help="robomimic's done_mode 0 (success), 1 (last step), 2 (both)",
    )
    p.add_argument("--success-reward", type=float, default=1.0, help="reward that means success")
    p.set_defaults(func=run_relabel)

    p = ops.add_parser("set-meta", help="set ep_meta entries (the language instruction, ...)")
    _common(p)
    p.add_argument("--lang", default=None, help="the language instruction (ep_meta 'lang')")
    p.add_argument(
        "--set",
        dest="values",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an ep_meta entry; VALUE is read as JSON when it parses, else as text",
    )
    p.add_argument("--demos", nargs="+", default=None, help="only these demos (default all)")
    p.set_defaults(func=run_set_meta)


def _run(args: argparse.Namespace, label: str, call) -> int:
    path = dataset_path(args)
    preflight_input(args, path)
    with progress_bar(None, label, unit="demo") as bar:
        result = call(path, progress=progress_callback(bar))
    notes = [f"{args.out}: {len(result.demos)} demos, {result.total} steps"]
    if result.removed:
        notes.append(
            f"removed {len(result.removed)} ({', '.join(result.removed[:8])}"
            f"{', ...' if len(result.removed) > 8 else ''})"
        )
    if result.changed:
        notes.append(f"changed {len(result.changed)} demos")
    if result.dropped_filter_keys:
        notes.append(f"filter keys left empty and dropped: {', '.join(result.dropped_filter_keys)}")
    print("; ".join(notes))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from demoset.editing import remove_demos, select_demos

    def call(path, progress):
        chosen = select_demos(
            path,
            demos=args.demos,
            filter_key=args.filter_key,
            shorter_than=args.shorter_than,
            longer_than=args.longer_than,
            no_success=args.no_success,
            success_reward=args.success_reward,
        )
        return remove_demos(path, args.out, chosen, overwrite=args.overwrite, progress=progress)

    return _run(args, "remove-demos", call)


def _edit(
    args: argparse.Namespace, label: str, edit: Callable[..., Any], *positional: Any, **options: Any
) -> int:
    """Run `edit(source, args.out, *positional, **options)` as the command `label`.

    Every edit function takes the source, the new file, --overwrite and a progress callback
    the same way; only its own arguments differ, so each command passes just those.
    """
    return _run(
        args,
        label,
        lambda path, progress: edit(
            path, args.out, *positional, overwrite=args.overwrite, progress=progress, **options
        ),
    )


def run_trim(args: argparse.Namespace) -> int:
    """`demoset edit trim`: cut frames at the start and/or end of demos."""
    from demoset.editing import trim_demos

    names = ("start", "end", "idle_start", "idle_end", "idle_tol", "demos")
    return _edit(args, "trim", trim_demos, **options_of(args, *names))


def run_rename(args: argparse.Namespace) -> int:
    """`demoset edit rename-key`: rename an array in every demo."""
    from demoset.editing import rename_key

    return _edit(args, "rename-key", rename_key, args.key, args.new, group=args.group)


def run_drop(args: argparse.Namespace) -> int:
    """`demoset edit drop-key`: drop an array from every demo."""
    from demoset.editing import drop_key

    return _edit(args, "drop-key", drop_key, args.key, group=args.group)


def run_add(args: argparse.Namespace) -> int:
    """`demoset edit add-key`: add an observation computed by a Python function."""
    from demoset.editing import add_key

    return _edit(args, "add-key", add_key, args.name, args.function)


def run_relabel(args: argparse.Namespace) -> int:
    """`demoset edit relabel`: recompute rewards and/or dones from success."""
    from demoset.editing import relabel

    return _edit(args, "relabel", relabel, **options_of(args, "rewards", "dones", "success_reward"))


def _parse_values(items: list[str]) -> dict:
    from demoset.errors import ConfigError

    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


def run_set_meta(args: argparse.Namespace) -> int:
    """`demoset edit set-meta`: set ep_meta entries of the chosen demos."""
    from demoset.editing import set_meta

    values = _parse_values(args.values)
    return _edit(args, "set-meta", set_meta, values=values, **options_of(args, "lang", "demos"))
