"""`demoset collect`, `demoset extract-obs`, `demoset playback`: the simulator commands.

Flag names follow robomimic's scripts (dataset_states_to_obs.py, playback_dataset.py) so
existing command lines keep working; dashed spellings are accepted too.
"""

from __future__ import annotations

import argparse
import os

from demoset.cli.common import (
    add_dataset_arg,
    add_filter_key_arg,
    dataset_path,
    progress_bar,
    progress_callback,
)
from demoset.cli.compress_cmd import add_compression_arg


def register(sub: argparse._SubParsersAction) -> None:
    _register_collect(sub)
    _register_extract(sub)
    _register_playback(sub)


# ---------------------------------------------------------------------------- collect
def _register_collect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="collect scripted robosuite demos into a raw file (as robosuite's teleop tools write it)",
        description="Run a scripted, noisy demonstrator in a robosuite task, record it with "
        "robosuite's DataCollectionWrapper and keep the successful demos in a raw HDF5 file "
        "(convert it with `demoset convert robosuite`). Tasks: Lift, Stack, PickPlaceCan.",
    )
    p.add_argument(
        "--env", "--environment", dest="env", default="Lift", help="robosuite task (default Lift)"
    )
    p.add_argument(
        "--robot", "--robots", dest="robot", default="Panda", help="robot (default Panda)"
    )
    p.add_argument(
        "--demos", "--n", dest="demos", type=int, default=10, help="successful demos to keep"
    )
    p.add_argument(
        "--out", "--output", dest="out", required=True, help="the raw HDF5 file to write"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for object placement and demonstrator noise"
    )
    p.add_argument(
        "--noise",
        type=float,
        default=0.05,
        help="std of the noise added to each action (default 0.05)",
    )
    p.add_argument(
        "--max-steps", type=int, default=400, help="give up an episode after this many steps"
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        help="stop after this many episodes (default 2*demos+10)",
    )
    p.add_argument(
        "--controller", default=None, help="robosuite controller config name (default: the robot's)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run_collect)


def run_collect(args: argparse.Namespace) -> int:
    from demoset.sim.collect import collect_demos

    with progress_bar(args.demos, f"collecting {args.env}", unit="demo") as bar:
        report = collect_demos(
            args.env,
            args.demos,
            args.out,
            robot=args.robot,
            controller=args.controller,
            seed=args.seed,
            noise=args.noise,
            max_steps=args.max_steps,
            max_attempts=args.max_attempts,
            overwrite=args.overwrite,
            progress=progress_callback(bar),
        )
    lengths = report.lengths
    print(
        f"wrote {report.path}: {report.kept} {report.env_name} demos "
        f"(lengths {min(lengths)}-{max(lengths)}, {sum(lengths)} steps)"
    )
    print(
        f"scripted success rate {report.kept}/{report.attempts} = {100 * report.success_rate:.0f}%, "
        f"{report.steps_per_second:.0f} steps/s, {report.seconds:.1f} s"
    )
    if report.kept < args.demos:
        print(
            f"warning: only {report.kept} of {args.demos} demos succeeded within {report.attempts} attempts"
        )
        return 1
    return 0


# ---------------------------------------------------------------------------- extract-obs
def _register_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract-obs",
        help="render observations from stored simulator states into a new file (robomimic's dataset_states_to_obs)",
        description="Reset the simulator to every stored state and record observations (low-dim, "
        "camera images, depth), rewards and dones into a NEW file. Accepts robomimic-layout files "
        "and raw robosuite files. --workers runs demos in parallel processes; the output is the "
        "same for any number of workers.",
    )
    add_dataset_arg(p)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", "--output", dest="out", help="path of the new file")
    out.add_argument(
        "--output_name",
        "--output-name",
        dest="output_name",
        help="file name beside the dataset (robomimic)",
    )
    p.add_argument(
        "--camera_names",
        "--camera-names",
        dest="camera_names",
        nargs="+",
        default=[],
        help="cameras to render",
    )
    p.add_argument("--camera_height", "--camera-height", dest="camera_height", type=int, default=84)
    p.add_argument("--camera_width", "--camera-width", dest="camera_width", type=int, default=84)
    p.add_argument("--depth", action="store_true", help="also store <camera>_depth maps (metres)")
    p.add_argument(
        "--done_mode",
        "--done-mode",
        dest="done_mode",
        type=int,
        choices=(0, 1, 2),
        default=0,
        help="dones: 0 when the next state succeeds, 1 at the last step, 2 both (default 0)",
    )
    p.add_argument(
        "--shaped", "--dense", dest="shaped", action="store_true", help="shaped (dense) rewards"
    )
    p.add_argument(
        "--copy_rewards",
        "--copy-rewards",
        dest="copy_rewards",
        action="store_true",
        help="copy rewards from the input",
    )
    p.add_argument(
        "--copy_dones",
        "--copy-dones",
        dest="copy_dones",
        action="store_true",
        help="copy dones from the input",
    )
    p.add_argument(
        "--exclude-next-obs",
        "--exclude_next_obs",
        dest="exclude_next_obs",
        action="store_true",
        help="do not store next_obs",
    )
    p.add_argument(
        "--compress", action="store_true", help="gzip-compress images (robomimic's flag)"
    )
    add_compression_arg(p)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel simulator processes (default 1; with --ray local: the local cluster's CPUs)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the demos it completed (kept in OUT.partial)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="extract on a Ray cluster: auto (the running one), local (start one here), "
        "or HOST:PORT; needs demoset[ray]",
    )
    p.add_argument("--n", type=int, default=None, help="only the first n demos")
    add_filter_key_arg(p, "extract only the demos of this filter key")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from demoset.sim.extract import extract_obs

    source = dataset_path(args)
    output = args.out or os.path.join(os.path.dirname(os.path.abspath(source)), args.output_name)
    compression = args.compression or ("gzip" if args.compress else None)
    with progress_bar(None, "extracting", unit="frame") as bar:

        def show_demos(done: int, total: int) -> None:
            bar.set_postfix_str(f"{done}/{total} demos", refresh=False)

        report = extract_obs(
            source,
            output,
            camera_names=args.camera_names,
            camera_height=args.camera_height,
            camera_width=args.camera_width,
            depth=args.depth,
            done_mode=args.done_mode,
            shaped=args.shaped,
            copy_rewards=args.copy_rewards,
            copy_dones=args.copy_dones,
            exclude_next_obs=args.exclude_next_obs,
            compression=compression,
            workers=args.workers or (None if args.ray == "local" else 1),
            n=args.n,
            filter_key=args.filter_key,
            overwrite=args.overwrite,
            progress=progress_callback(bar),
            resume=args.resume,
            ray=args.ray,
            demo_progress=show_demos,
        )
    if report.already_complete:
        print(f"{report.output} is complete: an interrupted run had finished it; nothing to do")
        return 0
    if report.resumed_demos:
        print(f"resumed after {report.resumed_demos} demos an interrupted run had completed")
    print(
        f"wrote {report.output}: {report.demos} demos, {report.frames} frames in {report.seconds:.1f} s "
        f"({report.frames_per_second:.1f} frames/s, {report.workers} worker{'s' if report.workers > 1 else ''}"
        f"{' on Ray' if args.ray else ''})"
    )
    if report.black_frames:
        total = sum(len(idx) for _, _, idx in report.black_frames)
        print(f"warning: {total} all-black frames:")
        for demo, key, idx in report.black_frames:
            shown = ", ".join(map(str, idx[:10])) + (" ..." if len(idx) > 10 else "")
            print(f"  {demo} obs/{key}: steps {shown}")
    return 0


# ---------------------------------------------------------------------------- playback
def _register_playback(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "playback",
        help="play demos back to an mp4 (from image obs, states, or actions open-loop) and report divergence",
        description="Write an mp4 of a dataset's demos (robomimic's playback_dataset): from stored "
        "image observations (--use-obs, no simulator), from stored states (default), or by replaying "
        "actions open-loop (--use-actions), which also reports the first step where the replay "
        "left the stored states. Several cameras are shown side by side.",
    )
    add_dataset_arg(p)
    p.add_argument(
        "--video_path", "--video-path", dest="video_path", default=None, help="the mp4 to write"
    )
    p.add_argument(
        "--render_image_names",
        "--render-image-names",
        "--camera-names",
        dest="names",
        nargs="+",
        default=[],
        help="cameras (or image obs keys with --use-obs); default agentview, or every image obs with --use-obs",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--use-obs",
        "--use_obs",
        dest="use_obs",
        action="store_true",
        help="use stored image observations",
    )
    source.add_argument(
        "--use-actions",
        "--use_actions",
        dest="use_actions",
        action="store_true",
        help="replay actions open-loop",
    )
    p.add_argument(
        "--depth", action="store_true", help="show depth beside each camera (normalised gray)"
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="only n demos: the first n, or n random ones with --seed",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="pick the --n demos at random with this seed"
    )
    p.add_argument(
        "--video_skip",
        "--video-skip",
        dest="video_skip",
        type=int,
        default=5,
        help="write every n-th step (default 5)",
    )
    p.add_argument("--fps", type=float, default=20.0, help="video frame rate (default 20)")
    p.add_argument("--first", action="store_true", help="only the first frame of each demo")
    p.add_argument("--height", type=int, default=84, help="rendered frame height (default 84)")
    p.add_argument("--width", type=int, default=84, help="rendered frame width (default 84)")
    p.add_argument(
        "--atol", type=float, default=1e-6, help="state difference that counts as divergence"
    )
    add_filter_key_arg(p, "play only the demos of this filter key")
    p.set_defaults(func=run_playback)


def run_playback(args: argparse.Namespace) -> int:
    path = dataset_path(args)
    if args.video_path is None:
        if not args.use_actions:
            from demoset.errors import DemosetError

            raise DemosetError(
                "nothing to do: give --video_path, or --use-actions to check open-loop replay"
            )
        return _replay_only(path, args)
    from demoset.viz.video import write_video

    source = "obs" if args.use_obs else "actions" if args.use_actions else "states"
    with progress_bar(None, "playback", unit="demo") as bar:
        report = write_video(
            path,
            args.video_path,
            source=source,
            camera_names=args.names,
            filter_key=args.filter_key,
            n=args.n,
            seed=args.seed,
            first=args.first,
            fps=args.fps,
            video_skip=args.video_skip,
            height=args.height,
            width=args.width,
            depth=args.depth,
            atol=args.atol,
            progress=progress_callback(bar),
        )
    print(
        f"wrote {report.path}: {report.frames} frames of {report.width}x{report.height} at {report.fps:g} fps, "
        f"{len(report.demos)} demos from {report.source} ({' | '.join(report.panels)})"
    )
    diverged = {d: t for d, t in report.divergence.items() if t is not None}
    if report.source == "actions":
        _print_divergence(report.divergence)
    return 1 if diverged else 0


def _replay_only(path: str, args: argparse.Namespace) -> int:
    from demoset.format import open_dataset
    from demoset.sim.playback import replay_dataset
    from demoset.viz.video import select_demos

    with open_dataset(path) as df:
        demos = select_demos(df.demos_for(args.filter_key), args.n, args.seed)
    with progress_bar(len(demos), "replaying", unit="demo") as bar:
        results = replay_dataset(path, demos=demos, atol=args.atol, progress=progress_callback(bar))
    divergence = {r.demo: r.first_divergence for r in results}
    for r in results:
        state = (
            f"diverged at action {r.first_divergence}"
            if r.diverged
            else "follows the stored states"
        )
        print(
            f"{r.demo}: {r.steps} actions, {state} (max state error {r.max_error:.3g}), success {r.success}"
        )
    _print_divergence(divergence)
    return 1 if any(t is not None for t in divergence.values()) else 0


def _print_divergence(divergence: dict[str, int | None]) -> None:
    diverged = {d: t for d, t in divergence.items() if t is not None}
    if diverged:
        listed = ", ".join(f"{d} at action {t}" for d, t in diverged.items())
        print(
            f"open-loop replay diverged from the stored states in {len(diverged)} of {len(divergence)} demos: {listed}"
        )
    else:
        print(f"open-loop replay followed the stored states in all {len(divergence)} demos")
