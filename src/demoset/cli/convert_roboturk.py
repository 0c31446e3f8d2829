"""`demoset convert roboturk FOLDER --out OUT`: a RoboTurk Pilot task folder."""

from __future__ import annotations

import argparse


def register(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser(
        "roboturk",
        aliases=["roboturk-pilot", "roboturk_pilot"],
        help="a RoboTurk Pilot task folder (demo.hdf5 and models/)",
        description="Convert a RoboTurk Pilot task folder (e.g. RoboTurkPilot/bins-Can) into a new "
        "robomimic-layout file: actions are joint velocities plus gripper, clipped to [-1, 1] (the "
        "number of clipped values is reported); each demo gets its model XML; filter keys train/valid "
        "(90/10), fastest_N and fastest_N_train/valid are added. The folder is never modified.",
    )
    p.add_argument(
        "folder", nargs="?", metavar="FOLDER", help="task folder holding demo.hdf5 and models/"
    )
    p.add_argument("--folder", dest="folder_flag", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--out", "--output", dest="out", required=True, help="the new robomimic-layout file"
    )
    p.add_argument(
        "--n", type=int, default=225, help="size of the fastest-N filter key (default 225)"
    )
    p.add_argument("--val-ratio", "--ratio", dest="val_ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0, as robomimic)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import progress_bar, progress_callback
    from demoset.convert.roboturk_pilot import convert_roboturk_pilot
    from demoset.errors import DemosetError

    folder = args.folder_flag or args.folder
    if not folder:
        raise DemosetError("no task folder given (demoset convert roboturk FOLDER --out OUT)")
    with progress_bar(None, "converting", unit="demo") as bar:
        result = convert_roboturk_pilot(
            folder,
            args.out,
            fastest_n=args.n,
            val_ratio=args.val_ratio,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=progress_callback(bar),
        )
    share = 100.0 * result.clipped_values / max(result.action_values, 1)
    print(
        f"wrote {result.out}: {result.demos} demos, {result.transitions} transitions, env {result.env_name}"
    )
    print(
        f"clipped {result.clipped_values} of {result.action_values} action values to [-1, 1] ({share:.2f}%)"
    )
    print("filter keys: " + ", ".join(f"{k} ({v})" for k, v in result.filter_keys.items()))
    return 0
