"""`demoset train`, `demoset config` and `demoset eval`: behaviour cloning from a dataset.

    demoset config --algo bc_rnn --out bc_rnn.json
    demoset train --dataset lift.hdf5 --config bc_rnn.json --name run1 --output runs
    demoset train --config bc_rnn.json --name run1 --output runs --resume
    demoset eval --checkpoint runs/run1/models/last.pth --episodes 50 --video run1.mp4

Multi-process training: `torchrun --nproc_per_node 2 -m demoset.cli.main train ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from demoset.cli.common import print_json, progress_bar, progress_callback


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a BC / BC-RNN policy on a dataset (writes a new run directory)",
        description="Train behaviour cloning (BC, BC-RNN, optional GMM head) from a robomimic-style "
        "JSON config. Writes <output>/<name>/ with config.json, logs/ (TensorBoard, log.txt) and "
        "models/ (last.pth after every epoch, for --resume).",
    )
    train.add_argument("dataset", nargs="?", help="path to the HDF5 dataset (or --dataset)")
    train.add_argument("--dataset", dest="dataset_flag", help=argparse.SUPPRESS)
    train.add_argument(
        "--config", help="JSON config (see `demoset config`); optional with --resume"
    )
    train.add_argument("--name", help="run name (default: experiment.name from the config)")
    train.add_argument(
        "--output",
        "--output_dir",
        dest="output",
        help="directory for runs (default: train.output_dir)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run <output>/<name> from models/last.pth",
    )
    train.add_argument("--epochs", type=int, default=None, help="override train.num_epochs")
    train.add_argument(
        "--device",
        default=None,
        help="torch device (default: cuda when train.cuda and available, else cpu)",
    )
    train.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    train.add_argument("--json", action="store_true", help="print the final summary as JSON")
    train.set_defaults(func=run_train)

    cfg = sub.add_parser(
        "config",
        help="write a training config template (bc, bc_rnn)",
        description="Print or write the JSON config template of an algorithm.",
    )
    cfg.add_argument("--algo", required=True, help="bc or bc_rnn")
    cfg.add_argument(
        "--modality",
        choices=("low_dim", "image"),
        default="low_dim",
        help="observation type (default low_dim)",
    )
    cfg.add_argument("--out", default=None, help="file to write (default: print to stdout)")
    cfg.add_argument("--force", action="store_true", help="replace --out if it exists")
    cfg.set_defaults(func=run_config)

    ev = sub.add_parser(
        "eval",
        help="roll a trained policy out in its dataset's environment",
        description="Run a checkpoint's policy in the environment recorded in the checkpoint; report "
        "success rate and returns, optionally with a video.",
    )
    ev.add_argument(
        "--checkpoint",
        "--agent",
        dest="checkpoint",
        required=True,
        help="a .pth from demoset train",
    )
    ev.add_argument("--episodes", "--n_rollouts", dest="episodes", type=int, default=10)
    ev.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="max steps per episode (default: the config's rollout horizon)",
    )
    ev.add_argument(
        "--video", "--video_path", dest="video", default=None, help="write an MP4 of the episodes"
    )
    ev.add_argument(
        "--video-skip",
        "--video_skip",
        dest="video_skip",
        type=int,
        default=None,
        help="frame every N steps",
    )
    ev.add_argument(
        "--camera", nargs="+", default=["agentview"], help="cameras in the video (side by side)"
    )
    ev.add_argument(
        "--video-size", type=int, default=256, help="video frame height/width per camera"
    )
    ev.add_argument("--seed", type=int, default=None)
    ev.add_argument(
        "--no-terminate-on-success", action="store_true", help="run every episode to the horizon"
    )
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=run_eval)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_train(args: argparse.Namespace) -> int:
    from demoset.errors import ConfigError
    from demoset.train.config import load_config
    from demoset.train.trainer import Trainer

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.config and not args.resume:
        raise ConfigError("no config given (--config FILE; `demoset config --algo bc` writes one)")
    config = load_config(args.config) if args.config else None
    if config is not None and args.epochs is not None:
        config["train"]["num_epochs"] = args.epochs
    dataset = getattr(args, "dataset_flag", None) or args.dataset
    trainer = Trainer(
        config,
        dataset=dataset,
        output_dir=args.output,
        name=args.name,
        resume=args.resume,
        device=args.device,
    )
    if args.resume and config is None and args.epochs is not None:
        trainer.config["train"]["num_epochs"] = args.epochs
    main = _is_main_process()
    state = {"bar": None}

    def on_epoch_start(epoch: int, num_epochs: int) -> None:
        if main:
            state["bar"] = progress_bar(None, f"epoch {epoch}/{num_epochs}", unit="step")
            state["update"] = progress_callback(state["bar"])

    def progress(done: int, total: int) -> None:
        if state["bar"] is not None:
            state["update"](done, total)

    def on_epoch_end(epoch: int, record: dict) -> None:
        if not main:
            return
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None
        if not args.json:
            print(_epoch_line(record), flush=True)

    result = trainer.run(
        progress=progress, on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end
    )
    if main:
        summary = {
            "run_dir": result.run_dir,
            "checkpoint": result.last_checkpoint,
            "epochs": result.epochs_done,
            "steps": result.steps_done,
        }
        if result.history:
            summary["last_epoch"] = result.history[-1]
        if args.json:
            print_json(summary)
        else:
            print(f"run directory: {result.run_dir}")
            print(f"checkpoint:    {result.last_checkpoint}")
    return 0


def _epoch_line(record: dict) -> str:
    tr = record["train"]
    parts = [f"epoch {record['epoch']}", f"loss {tr.get('action_loss', float('nan')):.4f}"]
    if record.get("valid"):
        parts.append(f"valid {record['valid'].get('action_loss', float('nan')):.4f}")
    parts.append(f"lr {record['lr']:.2g}")
    parts.append(f"{tr['samples_per_s']:.0f} samples/s")
    parts.append(f"data wait {100 * tr['data_wait_fraction']:.1f}%")
    if record.get("rollout"):
        parts.append(f"success {100 * record['rollout']['success_rate']:.0f}%")
    return "  ".join(parts)


def run_config(args: argparse.Namespace) -> int:
    from demoset.errors import ConfigError, WriteError
    from demoset.fsutil import atomic_output
    from demoset.train.config import template

    text = json.dumps(template(args.algo, args.modality), indent=4) + "\n"
    if not args.out:
        sys.stdout.write(text)
        return 0
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.force:
        raise ConfigError("file exists; pass --force to replace it", path=out)
    try:
        with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise WriteError(f"cannot write config ({exc.strerror})", path=out) from None
    print(f"wrote {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from demoset.train.rollout import evaluate_checkpoint

    bar = progress_bar(args.episodes, "episodes", unit="ep")
    kwargs = {"video_cameras": tuple(args.camera), "video_size": args.video_size}
    if args.video_skip:
        kwargs["video_skip"] = args.video_skip
    if args.no_terminate_on_success:
        kwargs["terminate_on_success"] = False
    try:
        result = evaluate_checkpoint(
            args.checkpoint,
            args.episodes,
            horizon=args.horizon,
            video_path=args.video,
            seed=args.seed,
            device=args.device,
            progress=progress_callback(bar),
            **kwargs,
        )
    finally:
        bar.close()
    summary = result.summary()
    if args.json:
        print_json(summary)
        return 0
    print(f"episodes:     {summary['episodes']}")
    print(f"success rate: {100 * summary['success_rate']:.1f}%")
    print(f"mean return:  {summary['mean_return']:.3f}")
    print(f"mean length:  {summary['mean_length']:.1f}")
    if summary["video"]:
        print(f"video:        {summary['video']}")
    return 0
