"""`demoset info` and `demoset validate`: look at a dataset without changing it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from demoset.cli.common import (
    add_dataset_arg,
    add_filter_key_arg,
    add_isolation_arg,
    dataset_path,
    print_json,
    progress_bar,
    progress_callback,
)


def register(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser(
        "info",
        help="summary of a dataset: demos, lengths, action range, filter keys, env, structure",
        description="Summary of a dataset (robomimic's get_dataset_info.py, and more).",
    )
    add_dataset_arg(info)
    add_filter_key_arg(info, "report on the demos of this filter key only")
    info.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="list filter-key demos and every demo's structure",
    )
    info.add_argument("--json", action="store_true", help="machine-readable JSON")
    info.add_argument(
        "--stats",
        action="store_true",
        help="add per-key statistics (stored in the file, or computed); see demoset stats",
    )
    add_isolation_arg(info)
    info.set_defaults(func=run_info)

    val = sub.add_parser(
        "validate",
        help="check a dataset against the robomimic layout (exit 1 on errors)",
        description="Check a dataset; every finding names the HDF5 path. Exit 0 clean, 1 errors, 2 unreadable.",
    )
    add_dataset_arg(val)
    val.add_argument("--json", action="store_true", help="machine-readable JSON")
    val.add_argument("--strict", action="store_true", help="treat warnings as errors")
    add_isolation_arg(val)
    val.set_defaults(func=run_validate)


# ---------------------------------------------------------------------- isolation
def call_reader(
    args: argparse.Namespace,
    fn: Callable[..., Any],
    *fn_args: Any,
    path: str,
    progress: Callable[[int, int], None] | None = None,
    cleanup: tuple[str | os.PathLike, ...] = (),
    **kwargs: Any,
) -> Any:
    """Call a library reader on `path`, in a forked child unless --no-isolation was given.

    In the child a file that makes HDF5 stop responding ends in UnsafeFileError (exit 2)
    after the stall limit, instead of hanging the command.
    """
    if progress is not None:
        kwargs["progress"] = progress
    if not getattr(args, "isolated", True):
        return fn(*fn_args, **kwargs)
    from demoset.format import run_isolated

    progress = kwargs.pop("progress", None)
    return run_isolated(fn, *fn_args, path=path, progress=progress, cleanup=cleanup, **kwargs)


# ---------------------------------------------------------------------- info
def _fmt_range(values: list[float] | None) -> str:
    if values is None:
        return "-"
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def _info_rows(s: dict) -> list[tuple[str, str]]:
    length = s["length"]
    rows = [
        ("file", f"{s['path']} ({s['file_size'] / 1e6:.2f} MB)"),
    ]
    if s["filter_key"]:
        rows.append(("filter key", s["filter_key"]))
    rows += [
        ("demos", str(s["num_demos"])),
        ("transitions", str(s["num_transitions"])),
        (
            "length",
            f"mean {length['mean']:.1f}, std {length['std']:.1f}, min {length['min']}, max {length['max']}",
        ),
        ("action dim", str(s["action_dim"])),
        ("action min", _fmt_range(s["action_min"])),
        ("action max", _fmt_range(s["action_max"])),
    ]
    if not s["actions_in_range"]:
        rows.append(("warning", "actions outside [-1, 1] (robomimic expects normalised actions)"))
    if (
        s["total_attr"] is not None
        and s["filter_key"] is None
        and s["total_attr"] != s["num_transitions"]
    ):
        rows.append(
            ("warning", f"data/total says {s['total_attr']}, demos hold {s['num_transitions']}")
        )
    if s["env_meta"] is not None:
        env = s["env_meta"]
        rows.append(("env", f"{env['env_name']} (type {env['type']})"))
        rows.append(("env kwargs", json.dumps(env["env_kwargs"], sort_keys=True)))
    elif s["env_meta_error"]:
        rows.append(("env", f"unreadable: {s['env_meta_error']}"))
    else:
        rows.append(
            (
                "env",
                "no env_args"
                + (
                    " (raw robosuite file: run demoset convert robosuite)"
                    if s["is_raw_robosuite"]
                    else ""
                ),
            )
        )
    fk = ", ".join(f"{k} ({n})" for k, n in s["filter_keys"].items()) or "none"
    rows.append(("filter keys", fk))
    if s.get("image_storage"):
        from demoset.format import describe_storage

        for key, info in s["image_storage"].items():
            rows.append(("storage", f"{key}: {describe_storage(info)}"))
    return rows


def _structure_lines(structure: dict | None) -> list[str]:
    if not structure:
        return []
    lines = []
    for key, info in structure["arrays"].items():
        lines.append(f"  {key}: {info['dtype']} {tuple(info['shape'])}")
    for key, value in structure["attrs"].items():
        lines.append(f"  @{key}: {value}")
    return lines


def _print_plain(s: dict, verbose: bool) -> None:
    width = max(len(k) for k, _ in _info_rows(s))
    for key, value in _info_rows(s):
        print(f"{key.ljust(width)}  {value}")
    if s["first_demo"]:
        print(f"structure of {s['first_demo']}:")
        for line in _structure_lines(s["structure"]):
            print(line)
    if verbose:
        for key, demos in s.get("filter_key_demos", {}).items():
            print(f"filter key {key}: {', '.join(demos)}")
        for demo, structure in s.get("demo_structures", {}).items():
            print(f"{demo} ({s['demo_lengths'][demo]} steps):")
            for line in _structure_lines(structure):
                print(line)


def _print_rich(s: dict, verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="demoset info", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in _info_rows(s):
        table.add_row(key, f"[yellow]{value}[/yellow]" if key == "warning" else value)
    console.print(table)

    def structure_table(title: str, structure: dict) -> Table:
        t = Table(title=title, title_justify="left")
        t.add_column("array")
        t.add_column("dtype")
        t.add_column("shape")
        for key, info in structure["arrays"].items():
            t.add_row(key, info["dtype"], str(tuple(info["shape"])))
        for key, value in structure["attrs"].items():
            t.add_row(f"@{key}", "attr", str(value))
        return t

    if s["first_demo"]:
        console.print(structure_table(f"structure of {s['first_demo']}", s["structure"]))
    if verbose:
        for key, demos in s.get("filter_key_demos", {}).items():
            console.print(f"[bold]filter key {key}[/bold]: {', '.join(demos)}")
        for demo, structure in s.get("demo_structures", {}).items():
            console.print(structure_table(f"{demo} ({s['demo_lengths'][demo]} steps)", structure))


def run_info(args: argparse.Namespace) -> int:
    from demoset.summary import summarize

    path = dataset_path(args)
    s = call_reader(
        args, summarize, path, path=path, filter_key=args.filter_key, verbose=args.verbose
    )
    if args.stats:
        from demoset.format import stats_summary

        s["stats"] = call_reader(args, stats_summary, path, path=path, filter_key=args.filter_key)
    if args.json:
        print_json(s)
        return 0
    if sys.stdout.isatty():
        _print_rich(s, args.verbose)
    else:
        _print_plain(s, args.verbose)
    if args.stats:
        from demoset.cli.stats_cmd import print_summary

        print_summary(s["stats"])
    return 0


# ---------------------------------------------------------------------- validate
def run_validate(args: argparse.Namespace) -> int:
    from demoset.format import validate

    path = dataset_path(args)
    with progress_bar(None, "validate", unit="demo") as bar:
        findings = call_reader(args, validate, path, path=path, progress=progress_callback(bar))
    errors = [f for f in findings if f.level == "error"]
    warnings = [f for f in findings if f.level == "warning"]
    if args.json:
        print_json({"path": path, "ok": not errors, "findings": [f.to_dict() for f in findings]})
    else:
        for f in findings:
            print(f"{path}: {f}")
        verdict = "OK" if not errors else "FAILED"
        print(f"{path}: {verdict}: {len(errors)} error(s), {len(warnings)} warning(s)")
    if errors or (args.strict and warnings):
        return 1
    return 0
