"""`demoset plot` and `demoset report`: pictures of a dataset (PNG plots, one HTML page)."""

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
    plot = sub.add_parser(
        "plot",
        help="PNG plots: trajectories, episode lengths, action histograms",
        description=(
            "Write PNG plots of a dataset into a folder: action and low-dim observation "
            "trajectories per dimension for a few demos, the episode-length histogram and "
            "action histograms per dimension, coloured by train/valid filter keys."
        ),
    )
    add_dataset_arg(plot)
    plot.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR",
        help="folder for the PNG files (created if missing)",
    )
    plot.add_argument(
        "--demo",
        "--demos",
        dest="demos",
        action="extend",
        nargs="+",
        metavar="DEMO",
        help="demos whose trajectories to draw (default: --num-demos chosen at random with --seed)",
    )
    plot.add_argument(
        "--keys",
        action="extend",
        nargs="+",
        metavar="KEY",
        help="arrays to draw as trajectories: actions, obs/NAME or NAME (default: actions and every low-dim obs)",
    )
    add_filter_key_arg(plot, "plot only the demos of this filter key")
    plot.add_argument(
        "--num-demos",
        "-n",
        type=int,
        default=5,
        help="demos drawn when --demo is not given (default 5)",
    )
    plot.add_argument("--seed", type=int, default=0, help="seed for choosing demos (default 0)")
    plot.add_argument(
        "--max-dims", type=int, default=12, help="panels per trajectory plot at most (default 12)"
    )
    plot.set_defaults(func=run_plot)

    report = sub.add_parser(
        "report",
        help="one self-contained HTML report: summary, plots, camera clips, outliers, validation",
        description=(
            "Write one HTML file that needs nothing else to open: the info summary, validate "
            "findings, filter keys, plots, a looping clip and a strip of frames per camera for a "
            "sample of demos, and demos flagged as outliers. Camera frames are read for a sample "
            "only, so it stays quick on large image datasets."
        ),
    )
    add_dataset_arg(report)
    report.add_argument("--out", "-o", required=True, metavar="HTML", help="the HTML file to write")
    add_filter_key_arg(report, "report on the demos of this filter key only")
    report.add_argument(
        "--num-demos", "-n", type=int, default=4, help="demos shown per camera (default 4)"
    )
    report.add_argument(
        "--plot-demos", type=int, default=5, help="demos drawn in trajectory plots (default 5)"
    )
    report.add_argument(
        "--keys",
        action="extend",
        nargs="+",
        metavar="KEY",
        help="arrays drawn as trajectories (default: actions and every low-dim obs)",
    )
    report.add_argument(
        "--scan-demos",
        type=int,
        default=24,
        help="demos whose frames are checked for black or frozen runs (default 24)",
    )
    report.add_argument(
        "--scan-frames",
        type=int,
        default=120,
        help="frames read per demo and camera, spread over the demo (default 120)",
    )
    report.add_argument(
        "--no-clips", action="store_true", help="strips of frames only, no animated clips"
    )
    report.add_argument("--no-validate", action="store_true", help="skip the validate findings")
    report.add_argument(
        "--doctor",
        action="store_true",
        help="run demoset doctor (without replay) and add its findings as a section",
    )
    report.add_argument("--seed", type=int, default=0, help="seed for choosing demos (default 0)")
    report.add_argument(
        "--json", action="store_true", help="print what was written and found as JSON"
    )
    report.set_defaults(func=run_report)


def run_plot(args: argparse.Namespace) -> int:
    from demoset.viz.plots import make_plots

    path = dataset_path(args)
    with progress_bar(None, "plot", unit="step") as bar:
        written = make_plots(
            path,
            args.out,
            demos=args.demos,
            keys=args.keys,
            filter_key=args.filter_key,
            n_demos=args.num_demos,
            seed=args.seed,
            max_dims=args.max_dims,
            progress=progress_callback(bar),
        )
    for name in written:
        print(name)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from demoset.viz.report import build_report

    path = dataset_path(args)
    doctor = None
    if args.doctor:
        from demoset.doctor import diagnose

        with progress_bar(None, "doctor", unit="check") as bar:
            doctor = diagnose(
                path, filter_key=args.filter_key, replay=False, progress=progress_callback(bar)
            ).to_dict()
    with progress_bar(None, "report", unit="step") as bar:
        result = build_report(
            path,
            args.out,
            doctor=doctor,
            filter_key=args.filter_key,
            n_camera_demos=args.num_demos,
            n_plot_demos=args.plot_demos,
            plot_keys=args.keys,
            scan_demos=args.scan_demos,
            scan_frames=args.scan_frames,
            clips=not args.no_clips,
            run_validate=not args.no_validate,
            seed=args.seed,
            progress=progress_callback(bar),
        )
    if args.json:
        print_json(result.to_dict())
        return 0
    if result.findings is None:
        checked = "validate skipped"
    else:
        errors = sum(f.level == "error" for f in result.findings)
        checked = f"validate: {errors} errors, {len(result.findings) - errors} warnings"
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB) in {result.seconds:.1f} s")
    print(
        f"{result.num_demos} demos; {checked}; {len(result.outliers)} outliers; "
        f"read {result.frames_read:,} of {result.frames_total:,} camera frames"
    )
    for o in result.outliers[:20]:
        print(f"  {o.kind}: {o.h5path}: {o.message}")
    if len(result.outliers) > 20:
        print(f"  ... and {len(result.outliers) - 20} more (see the report)")
    return 0
