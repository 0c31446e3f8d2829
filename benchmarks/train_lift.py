"""BC-RNN on a scripted Lift dataset: train on CPU within a time budget, then roll out.

    .venv/bin/python benchmarks/train_lift.py --workdir /tmp/train_lift            # make data, train, eval
    .venv/bin/python benchmarks/train_lift.py --dataset lift_low_dim.hdf5 --minutes 20

Steps:
1. Unless --dataset is given, make the dataset with demoset's own commands: `demoset
   collect` (scripted Panda demos in robosuite), `demoset convert robosuite`, `demoset
   extract-obs` (low-dim observations).
2. Train BC-RNN (robomimic's BC-RNN template: 2-layer LSTM of 400, GMM head with 5 modes,
   sequence length 10, batch 100; only the learning rate is raised to 1e-3) with
   `demoset.train.Trainer` until one more epoch would pass the time budget.
3. Roll out the checkpoints saved along the way (--curve-episodes each) and the final one
   (--episodes, default 50) in the Lift environment, with seeds the collection did not use.
4. Print a JSON summary (success rate, steps, samples/s, data-wait share of step time) and
   save the learning curve as a PNG.

Timing is measured, not asserted: the machine may be shared.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEMOSET = [sys.executable, "-m", "demoset.cli.main"]
EVAL_SEED = 100_000  # collection uses small seeds; evaluation starts far from them


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def make_dataset(workdir: str, demos: int) -> str:
    """Scripted Lift demos -> robomimic layout -> low-dim observations, with demoset's CLI."""
    raw = os.path.join(workdir, "lift_raw.hdf5")
    converted = os.path.join(workdir, "lift_states.hdf5")
    low_dim = os.path.join(workdir, "lift_low_dim.hdf5")
    if not os.path.exists(raw):
        run(
            [
                *DEMOSET,
                "collect",
                "--env",
                "Lift",
                "--robot",
                "Panda",
                "--demos",
                str(demos),
                "--out",
                raw,
            ]
        )
    if not os.path.exists(converted):
        run([*DEMOSET, "convert", "robosuite", raw, "--out", converted])
    if not os.path.exists(low_dim):
        run([*DEMOSET, "extract-obs", converted, "--out", low_dim, "--workers", "2"])
    return low_dim


def build_config(args: argparse.Namespace) -> dict:
    from demoset.train.config import template

    cfg = template("bc_rnn")
    cfg["experiment"]["name"] = "bc_rnn_lift"
    cfg["experiment"]["save"]["every_n_epochs"] = args.save_every
    cfg["experiment"]["rollout"]["enabled"] = False  # rollouts after training, outside the budget
    cfg["experiment"]["rollout"]["horizon"] = args.horizon
    cfg["train"]["hdf5_cache_mode"] = "all"
    cfg["train"]["num_epochs"] = 100_000  # the time budget ends training
    cfg["train"]["cuda"] = False
    cfg["algo"]["rnn"]["hidden_dim"] = args.hidden_dim
    cfg["algo"]["gmm"]["enabled"] = args.gmm
    if args.lr:
        cfg["algo"]["optim_params"]["policy"]["learning_rate"]["initial"] = args.lr
    return cfg


def train(dataset: str, cfg: dict, outdir: str, budget_s: float, resume: bool):
    from demoset.train.trainer import Trainer

    start = time.perf_counter()
    longest = {"epoch_s": 0.0}

    def on_epoch_end(epoch: int, record: dict) -> None:
        longest["epoch_s"] = max(longest["epoch_s"], record["train"]["time_epoch_s"])
        tr = record["train"]
        print(
            f"epoch {epoch:4d}  {time.perf_counter() - start:7.1f}s  loss {tr['action_loss']:.4f}  "
            f"{tr['samples_per_s']:.0f} samples/s  data wait {100 * tr['data_wait_fraction']:.2f}%",
            flush=True,
        )

    def should_stop() -> bool:
        # stop when one more epoch (plus a margin for the checkpoint) would pass the budget
        return time.perf_counter() - start + 1.2 * longest["epoch_s"] > budget_s

    trainer = Trainer(cfg, dataset=dataset, output_dir=outdir, resume=resume)
    result = trainer.run(on_epoch_end=on_epoch_end, should_stop=should_stop)
    return result, time.perf_counter() - start


def evaluate(checkpoint: str, episodes: int, horizon: int, seed: int) -> dict:
    from demoset.train.rollout import evaluate_checkpoint

    res = evaluate_checkpoint(checkpoint, episodes, horizon=horizon, seed=seed)
    return res.summary()


def plot(history: list[dict], curve: list[dict], final: dict, png: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = []
    t = 0.0
    for h in history:
        t += h["train"]["time_epoch_s"]
        minutes.append(t / 60.0)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(minutes, [h["train"]["action_loss"] for h in history], color="tab:blue")
    ax1.set_xlabel("training time (min, 2-core CPU)")
    ax1.set_ylabel("training loss (GMM negative log-likelihood)")
    ax1.set_title("loss")
    ax1.grid(alpha=0.3)
    xs = [c["minutes"] for c in curve]
    ax2.plot(
        xs, [100 * c["success_rate"] for c in curve], "o-", color="tab:green", label="checkpoints"
    )
    ax2.plot(
        [final["minutes"]],
        [100 * final["success_rate"]],
        "*",
        markersize=14,
        color="tab:red",
        label=f"final, {final['episodes']} rollouts",
    )
    ax2.axhline(80, color="grey", linestyle="--", linewidth=1, label="80% target")
    ax2.set_ylim(-3, 103)
    ax2.set_xlabel("training time (min, 2-core CPU)")
    ax2.set_ylabel("success rate (%)")
    ax2.set_title("Lift rollouts")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", help="a low-dim Lift dataset (default: make one in --workdir)")
    p.add_argument("--workdir", default="/tmp/demoset_train_lift")
    p.add_argument("--demos", type=int, default=100)
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    p.add_argument("--episodes", type=int, default=50, help="rollouts of the final checkpoint")
    p.add_argument(
        "--curve-episodes", type=int, default=20, help="rollouts per intermediate checkpoint"
    )
    p.add_argument("--horizon", type=int, default=400)
    p.add_argument("--hidden-dim", type=int, default=400)
    p.add_argument("--gmm", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="learning rate (default 1e-3: robomimic's 1e-4 is tuned for ~200k GPU steps)",
    )
    p.add_argument("--save-every", type=int, default=10, help="epochs between curve checkpoints")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine more threads spin and slow down)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --workdir")
    p.add_argument("--png", default=os.path.join(ROOT, "docs", "img", "train_lift_curve.png"))
    p.add_argument("--json-out", default=None, help="also write the summary here")
    args = p.parse_args()

    os.environ.setdefault("MUJOCO_GL", "osmesa")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    dataset = args.dataset or make_dataset(args.workdir, args.demos)
    cfg = build_config(args)
    outdir = os.path.join(args.workdir, "runs")
    result, wall = train(dataset, cfg, outdir, args.minutes * 60.0, args.resume)
    hist = result.history
    data_s = sum(h["train"]["time_data_s"] for h in hist)
    compute_s = sum(h["train"]["time_compute_s"] for h in hist)
    train_s = sum(h["train"]["time_epoch_s"] for h in hist)
    minutes_at = {}
    t = 0.0
    for h in hist:
        t += h["train"]["time_epoch_s"]
        minutes_at[h["epoch"]] = t / 60.0

    curve = []
    models = os.path.join(result.run_dir, "models")
    for path in sorted(
        glob.glob(os.path.join(models, "model_epoch_*.pth")),
        key=lambda s: int(re.findall(r"\d+", os.path.basename(s))[0]),
    ):
        epoch = int(re.findall(r"\d+", os.path.basename(path))[0])
        if epoch not in minutes_at:
            continue
        s = evaluate(path, args.curve_episodes, args.horizon, EVAL_SEED + epoch)
        curve.append(
            {
                "epoch": epoch,
                "minutes": minutes_at[epoch],
                "success_rate": s["success_rate"],
                "episodes": s["episodes"],
            }
        )
        print(
            f"checkpoint epoch {epoch}: success {100 * s['success_rate']:.0f}% of {s['episodes']}",
            flush=True,
        )
    final_eval = evaluate(result.last_checkpoint, args.episodes, args.horizon, EVAL_SEED)
    last_epoch = hist[-1]["epoch"] if hist else 0
    final = {
        "epoch": last_epoch,
        "minutes": minutes_at.get(last_epoch, 0.0),
        "success_rate": final_eval["success_rate"],
        "episodes": final_eval["episodes"],
    }
    summary = {
        "dataset": os.path.abspath(dataset),
        "hidden_dim": args.hidden_dim,
        "gmm": args.gmm,
        "threads": torch.get_num_threads(),
        "epochs": last_epoch,
        "gradient_steps": result.steps_done,
        "training_minutes": train_s / 60.0,
        "wall_minutes_including_setup": wall / 60.0,
        "samples_per_s": sum(h["train"]["steps"] for h in hist)
        * cfg["train"]["batch_size"]
        / train_s
        if train_s
        else 0.0,
        "data_wait_fraction_of_step_time": data_s / (data_s + compute_s)
        if data_s + compute_s
        else 0.0,
        "final_success_rate": final_eval["success_rate"],
        "final_episodes": final_eval["episodes"],
        "final_mean_length": final_eval["mean_length"],
        "rollout_seconds": final_eval["seconds"],
        "curve": curve,
        "checkpoint": result.last_checkpoint,
        "png": os.path.abspath(args.png),
    }
    title = (
        f"BC-RNN (LSTM {args.hidden_dim}{', GMM' if args.gmm else ''}) on {args.demos} scripted Lift demos: "
        f"{100 * final['success_rate']:.0f}% success after {summary['training_minutes']:.1f} min"
    )
    plot(hist, curve, final, args.png, title)
    print(json.dumps(summary, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(summary, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
