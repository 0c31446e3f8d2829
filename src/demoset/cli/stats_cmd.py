"""`demoset stats`: per-key statistics of a dataset, and storing them in the file."""

from __future__ import annotations

import argparse

from demoset.cli.common import (
    add_dataset_arg,
    add_filter_key_arg,
    dataset_path,
    print_json,
    progress_bar,
    progress_callback,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="per-key statistics (mean, std, min, max, q01, q99); --store keeps them in the file",
        description="Statistics of actions and low-dim observations over a filter key's demos. "
        "With --store, every demo's statistics are written into the file (group "
        "demoset_stats, which robomimic ignores), so the loader, the trainer, subset, merge "
        "and edit use them without reading the arrays again.",
    )
    add_dataset_arg(p)
    add_filter_key_arg(p, "statistics over the demos of this filter key")
    p.add_argument(
        "--store",
        action="store_true",
        help="write every demo's statistics into the file (a journaled in-place edit)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.set_defaults(func=run_stats)


def print_summary(summary: dict) -> None:
    """The statistics table, one row per key and dimension."""
    source = "stored in the file" if summary["stored"] else "computed from the arrays"
    accuracy = summary["quantile_relative_accuracy"]
    print(
        f"statistics of {summary['demos']} demos ({source}; q01/q99 within {accuracy:.0%} "
        "relative error)"
    )
    header = ("key", "count", "mean", "std", "min", "max", "q01", "q99")
    rows = []
    for key, s in summary["keys"].items():
        for d in range(len(s["mean"])):
            name = key if len(s["mean"]) == 1 else f"{key}[{d}]"
            rows.append(
                (name, str(s["count"]))
                + tuple(f"{s[f][d]:.4g}" for f in ("mean", "std", "min", "max", "q01", "q99"))
            )
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def run_stats(args: argparse.Namespace) -> int:
    from demoset.format import stats_summary, store_stats

    path = dataset_path(args)
    if args.store:
        with progress_bar(None, "stats", unit="demo") as bar:
            n = store_stats(path, progress=progress_callback(bar))
        if not args.json:
            print(f"{path}: statistics of {n} demos stored (group demoset_stats)")
    summary = stats_summary(path, filter_key=args.filter_key)
    if args.json:
        print_json(summary)
    else:
        print_summary(summary)
    return 0
