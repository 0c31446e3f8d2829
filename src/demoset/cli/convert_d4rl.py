"""`demoset convert d4rl IN --out OUT`: a D4RL HDF5 file into the robomimic layout."""

from __future__ import annotations

import argparse

from demoset.cli.common import add_isolation_arg


def register(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser(
        "d4rl",
        help="a D4RL HDF5 file (observations, actions, rewards, terminals, timeouts)",
        description="Convert a D4RL HDF5 file into a new robomimic-layout file. Episodes end at "
        "terminals or timeouts; an unterminated episode at the end is kept as the last demo "
        "(--drop-trailing drops it). Observations go to obs/flat; next_obs comes from "
        "next_observations when the file has it. The source is never modified.",
    )
    p.add_argument("input", metavar="IN", help="the D4RL .hdf5 file")
    p.add_argument(
        "--out", "--output", dest="out", required=True, help="the new robomimic-layout file"
    )
    p.add_argument(
        "--env-name",
        "--env",
        dest="env_name",
        default=None,
        help="gym env id for env_args (default: from the file's metadata, else the file name)",
    )
    p.add_argument(
        "--infos-as-obs",
        action="store_true",
        help="turn every infos/* array (e.g. qpos, qvel) into an observation key",
    )
    p.add_argument(
        "--info-keys",
        nargs="+",
        default=None,
        metavar="KEY",
        help="turn only these infos/* arrays into observation keys",
    )
    p.add_argument(
        "--dones-at-timeouts",
        action="store_true",
        help="also set dones on the last step of episodes that ended at a time limit (as robomimic's script)",
    )
    p.add_argument(
        "--drop-trailing",
        action="store_true",
        help="drop the unterminated episode at the end of the file instead of keeping it",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_isolation_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from demoset.cli.common import preflight_input, progress_bar, progress_callback
    from demoset.convert.d4rl import convert_d4rl

    infos = args.info_keys if args.info_keys else bool(args.infos_as_obs)
    preflight_input(args, args.input)
    with progress_bar(None, "converting", unit="step") as bar:
        result = convert_d4rl(
            args.input,
            args.out,
            env_name=args.env_name,
            infos_as_obs=infos,
            dones_at_timeouts=args.dones_at_timeouts,
            keep_trailing=not args.drop_trailing,
            overwrite=args.overwrite,
            progress=progress_callback(bar),
        )
    print(
        f"wrote {result.out}: {result.demos} demos, {result.transitions} transitions, "
        f"obs keys {', '.join(result.obs_keys)}, next_obs from {result.next_obs_source}, "
        f"env {result.env_name} (from {result.env_name_source})"
    )
    if result.trailing_steps:
        what = "kept as the last demo" if result.trailing_kept else "dropped"
        print(
            f"the file ends with an unterminated episode of {result.trailing_steps} steps: {what}"
        )
    if result.skipped_infos:
        print(
            f"infos not turned into observations (length differs): {', '.join(result.skipped_infos)}"
        )
    return 0
