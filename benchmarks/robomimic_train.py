"""Benchmark: robomimic 0.3.0's own train.py, with its own loader and with demoset's.

What a robomimic user sees after `demoset.robomimic.install()` (or `demoset
robomimic-train`): the epoch time of robomimic's unchanged training loop, and the share of
it spent waiting for the DataLoader. robomimic's `run_epoch` times each `next()` on the
DataLoader itself ("Time_Data_Loading") beside the whole epoch ("Time_Epoch"); this script
keeps the dict each epoch returns (the real function runs; only its result is kept).

Builds two files with demoset's writer (nothing is downloaded), shaped like the ones of
`benchmarks/loader.py`:

- low-dim: 200 demos x 150 steps (robot0_eef_pos 3, robot0_eef_quat 4, robot0_gripper_qpos
  2, object 10; actions 7), trained with BC-RNN (horizon and seq_length 10, batch 100,
  cache "all"), 20 steps per epoch;
- images: the same low-dim keys plus two 84x84 cameras, 20 demos x 150 steps, trained
  with BC-RNN on images (ShallowConv + spatial softmax per camera, since torchvision does
  not import here, on a random 24x24 crop; seq_length 10, batch 16, cache "low_dim"),
  10 steps per epoch.

The networks are smaller than robomimic's published configs (LSTM 1 x 100 instead of
2 x 400): on these CPU-only machines the model's compute would otherwise hide the loader
(at 2 x 400 an epoch is >99 % compute here). On a GPU the compute share shrinks and the
data wait is what is left; its seconds per epoch ("wait s") are the figure to carry over.

Three loaders take turns in one process (the order reversing each round), with the same
seed, 0 DataLoader workers (robomimic's templates), no checkpoints and no rollouts:
robomimic's own; demoset's through `install()` alone, train.py's DataLoader as written
(torch's default collate); demoset's as `demoset robomimic-train` runs it (train.py's
DataLoader given `collate_fn=demoset.loader.collate`).
Each run trains `--epochs` epochs of `--steps` gradient steps; the first epoch of each run
is left out (first DataLoader iterator, caches warming). The report gives, per loader,
the median epoch time over runs and epochs, the median data wait per epoch, the
data-wait share (sum of data-loading time over sum of epoch time), and the ratios of
robomimic's times to each loader's.

Run: `.venv/bin/python benchmarks/robomimic_train.py` (about 3-5 minutes on 2 cores;
`--quick` for a smoke run, `--only low-dim` or `--only images` for one case).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

LOW_DIM = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10}
CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")
LIFT_ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}}


def build_file(path: str, n_demos: int, steps: int, cameras: tuple[str, ...]) -> None:
    from demoset.format import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(path, env_meta=LIFT_ENV, overwrite=True) as w:
        for _ in range(n_demos):
            obs = {k: rng.standard_normal((steps, d)) for k, d in LOW_DIM.items()}
            for cam in cameras:
                obs[cam] = rng.integers(0, 256, (steps, 84, 84, 3), dtype=np.uint8)
            w.add_demo(
                actions=rng.uniform(-1, 1, (steps, 7)),
                obs=obs,
                rewards=np.zeros(steps),
                states=rng.standard_normal((steps, 32)),
                derive_next_obs=True,
            )


def config(name: str, data: str, out: str, images: bool, epochs: int, steps: int) -> dict:
    cfg = {
        "algo_name": "bc",
        "experiment": {
            "name": name,
            "validate": False,
            "logging": {"terminal_output_to_txt": False, "log_tb": False},
            "save": {"enabled": False},
            "epoch_every_n_steps": steps,
            "rollout": {"enabled": False},
            "render_video": False,
        },
        "train": {
            "data": data,
            "output_dir": out,
            "num_data_workers": 0,
            "hdf5_cache_mode": "all",
            "hdf5_load_next_obs": False,
            "seq_length": 10,
            "batch_size": 100,
            "num_epochs": epochs,
            "cuda": False,
            "seed": 1,
        },
        "algo": {
            "actor_layer_dims": [],
            "rnn": {"enabled": True, "horizon": 10, "hidden_dim": 100, "num_layers": 1},
        },
        "observation": {"modalities": {"obs": {"low_dim": list(LOW_DIM)}}},
    }
    if images:
        cfg["train"].update(hdf5_cache_mode="low_dim", batch_size=16)
        cfg["observation"] = {
            "modalities": {"obs": {"low_dim": list(LOW_DIM), "rgb": list(CAMERAS)}},
            "encoder": {
                "rgb": {
                    "core_kwargs": {
                        "backbone_class": "ShallowConv",
                        "pool_class": "SpatialSoftmax",
                        "pool_kwargs": {"num_kp": 16},
                        "feature_dimension": 32,
                    },
                    # the network sees a 24x24 crop: the loader still serves whole 84x84
                    # windows, while the convolution costs ~12x less than on full frames
                    "obs_randomizer_class": "CropRandomizer",
                    "obs_randomizer_kwargs": {"crop_height": 24, "crop_width": 24},
                }
            },
        }
    return cfg


LOADERS = {  # label -> run_train_script arguments
    "robomimic": dict(use_demoset=False),
    "demoset": dict(use_demoset=True, fast_collate=False),
    "demoset+collate": dict(use_demoset=True, fast_collate=True),
}


def run_once(cfg: dict, workdir: str, loader: str) -> tuple[list[dict], float]:
    """One train.py run; returns the per-epoch logs of run_epoch and the run's wall time."""
    import robomimic.utils.train_utils as TrainUtils

    from demoset import robomimic

    path = os.path.join(workdir, f"{cfg['experiment']['name']}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    logs: list[dict] = []
    run_epoch = TrainUtils.run_epoch

    def keeping_logs(*args, **kwargs):
        log = run_epoch(*args, **kwargs)
        logs.append(log)
        return log

    TrainUtils.run_epoch = keeping_logs
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            robomimic.run_train_script(["--config", path], **LOADERS[loader])
    finally:
        TrainUtils.run_epoch = run_epoch
    return logs, time.perf_counter() - started


def measure(case: str, data: str, images: bool, args, workdir: str) -> dict:
    results: dict[str, dict] = {k: {"epoch": [], "wait": [], "wall": []} for k in LOADERS}
    for r in range(args.rounds):
        order = list(LOADERS) if r % 2 == 0 else list(reversed(LOADERS))
        for which in order:
            name = f"{case}_{which}_{r}"
            cfg = config(name, data, os.path.join(workdir, "out"), images, args.epochs, args.steps)
            logs, wall = run_once(cfg, workdir, which)
            kept = logs[1:] or logs
            results[which]["epoch"] += [60.0 * log["Time_Epoch"] for log in kept]
            results[which]["wait"] += [60.0 * log["Time_Data_Loading"] for log in kept]
            results[which]["wall"].append(wall)
            print(
                f"  {case:8s} round {r + 1}/{args.rounds} {which:15s} "
                f"epoch {statistics.median(60.0 * log['Time_Epoch'] for log in kept):.2f} s, "
                f"data wait {sum(log['Time_Data_Loading'] for log in kept) / sum(log['Time_Epoch'] for log in kept):.0%}, "
                f"run {wall:.1f} s",
                flush=True,
            )
    out = {}
    for which, r in results.items():
        out[which] = {
            "epoch_s": statistics.median(r["epoch"]),
            "wait_share": sum(r["wait"]) / sum(r["epoch"]),
            "wait_s": statistics.median(r["wait"]),
            "run_s": statistics.median(r["wall"]),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first left out)")
    parser.add_argument("--steps", type=int, default=None, help="gradient steps per epoch")
    parser.add_argument("--rounds", type=int, default=2, help="runs per loader, alternating")
    parser.add_argument("--only", choices=["low-dim", "images"], default=None)
    parser.add_argument("--quick", action="store_true", help="tiny files and runs (smoke test)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    from demoset.robomimic import stub_torchvision_if_missing

    reason = stub_torchvision_if_missing()
    if reason:
        print(f"torchvision does not import here ({reason}); robomimic runs with a stand-in")

    cases = []
    if args.only in (None, "low-dim"):
        cases.append(("low-dim", False, 20 if args.quick else 200, args.steps or 20))
    if args.only in (None, "images"):
        cases.append(("images", True, 4 if args.quick else 20, args.steps or 10))
    if args.quick:
        args.epochs, args.rounds = 2, 1
    report = {}
    with tempfile.TemporaryDirectory(prefix="demoset_rmtrain_") as workdir:
        for case, images, n_demos, steps in cases:
            data = os.path.join(workdir, f"{case}.hdf5")
            build_file(data, n_demos, 150, CAMERAS if images else ())
            args_case = argparse.Namespace(**{**vars(args), "steps": 5 if args.quick else steps})
            report[case] = measure(case, data, images, args_case, workdir)
            report[case]["steps_per_epoch"] = args_case.steps

    print()
    print("robomimic 0.3.0 train.py, per epoch (median; first epoch of each run left out)")
    print(
        f"{'case':8s} {'loader':15s} {'epoch':>8s} {'speed-up':>9s} {'data wait':>10s} "
        f"{'wait share':>10s} {'wait ratio':>10s}"
    )
    for case, r in report.items():
        base = r["robomimic"]
        for which in LOADERS:
            x = r[which]
            print(
                f"{case:8s} {which:15s} {x['epoch_s']:7.2f}s {base['epoch_s'] / x['epoch_s']:8.2f}x "
                f"{x['wait_s']:9.3f}s {x['wait_share']:10.1%} "
                f"{base['wait_s'] / max(x['wait_s'], 1e-9):9.1f}x"
            )
    print("speed-up and wait ratio: robomimic's time over this loader's (above 1: faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
