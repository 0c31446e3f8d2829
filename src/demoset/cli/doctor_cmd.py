"""`demoset doctor`: content checks beyond `validate`; exit 1 when a finding is an error."""

from __future__ import annotations

import argparse
import sys

from demoset.cli.common import (
    add_dataset_arg,
    add_filter_key_arg,
    dataset_path,
    preflight_input,
    print_json,
    progress_bar,
    progress_callback,
)


def _count_or_all(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a count of at least 1, or 'all'")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="find what breaks training quietly: replay divergence, bad frames, no success, ...",
        description="Checks a dataset's content: open-loop replay against the stored states "
        "(robosuite datasets), black/saturated/frozen camera frames and frames shared between "
        "demos, demos that never succeed, duplicate demos, action saturation, next_obs that is "
        "not the next obs, constant observations. Exit 0 without errors, 1 with errors, 2 when "
        "the file cannot be read.",
    )
    add_dataset_arg(p)
    add_filter_key_arg(p, "check the demos of this filter key only")
    p.add_argument("--no-replay", action="store_true", help="skip the simulator replay")
    p.add_argument(
        "--replay-demos",
        type=_count_or_all,
        default=5,
        metavar="N|all",
        help="demos to replay, chosen at random with --seed (default 5; 'all')",
    )
    p.add_argument(
        "--frames-per-demo",
        type=_count_or_all,
        default=120,
        metavar="N|all",
        help="camera frames read per demo, spread over it (default 120; 'all')",
    )
    p.add_argument("--success-reward", type=float, default=1.0, help="reward that means success")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from demoset.doctor import diagnose

    path = dataset_path(args)
    preflight_input(args, path)
    with progress_bar(None, "doctor", unit="check") as bar:
        report = diagnose(
            path,
            filter_key=args.filter_key,
            replay=not args.no_replay,
            replay_demos=args.replay_demos,
            frames_per_demo=args.frames_per_demo,
            success_reward=args.success_reward,
            seed=args.seed,
            progress=progress_callback(bar),
        )
    if args.json:
        print_json(report.to_dict())
        return 1 if report.has_errors else 0
    if sys.stdout.isatty():
        _print_rich(report)
    else:
        for f in report.findings:
            key = f" {f.key}" if f.key else ""
            print(f"{f.severity:7}  {f.check}{key}: {f.where()}: {f.message}")
    counts = report.counts()
    for line in report.checked:
        print(f"checked  {line}")
    verdict = "FAILED" if report.has_errors else "OK"
    print(
        f"{path}: {verdict}: {counts['error']} error(s), {counts['warning']} warning(s) "
        f"in {report.seconds:.1f} s"
    )
    return 1 if report.has_errors else 0


def _print_rich(report) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"error": "red", "warning": "yellow", "info": "blue"}
    table = Table(show_header=True, header_style="bold")
    for column in ("severity", "check", "demos and steps", "finding"):
        table.add_column(column)
    for f in report.findings:
        colour = colours.get(f.severity, "white")
        check = f.check + (f" ({f.key})" if f.key else "")
        table.add_row(f"[{colour}]{f.severity}[/{colour}]", check, f.where(), f.message)
    Console().print(table)
