"""The training loop: epochs of gradient steps, validation, logs, checkpoints, resume.

A run lives in `<output_dir>/<name>/`:

    config.json         the full config the run trains with
    logs/               TensorBoard event files, log.txt (one JSON line per epoch)
    models/last.pth     written after every epoch; `--resume` continues from it
    models/model_epoch_<k>.pth, best_validation.pth, best_success.pth   as the config asks

Resuming restores model, optimizer, RNG state and epoch; the batch order of every epoch is
fixed by (seed, epoch), so a resumed run ends with the same weights as one that was never
interrupted. The library never prints: progress goes to the callbacks given to `run`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from demoset.errors import ConfigError
from demoset.train import distributed
from demoset.train.algos import BCAlgo
from demoset.train.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from demoset.train.config import TrainConfig, config_differences, make_config
from demoset.train.data import (
    DatasetFacts,
    EpochBatchSampler,
    action_normalization_stats,
    describe_dataset,
    make_loader,
    make_sequence_dataset,
    obs_normalization_stats,
    share_action_stats,
)

# Config keys a resumed run may change: how long to train, and how it is logged/saved.
RESUMABLE_KEYS = ("train.num_epochs", "train.num_data_workers", "train.cuda", "train.output_dir")
RESUMABLE_PREFIXES = ("experiment.save.", "experiment.logging.", "experiment.rollout.")


@dataclass
class TrainResult:
    run_dir: str
    last_checkpoint: str | None
    epochs_done: int
    steps_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batch_size(batch: dict) -> int:
    return int(batch["actions"].shape[0])


class Trainer:
    """Train BC / BC-RNN on a dataset as a config says.

    `dataset`, `output_dir` and `name` override train.data, train.output_dir and
    experiment.name. `resume` continues the run in `<output_dir>/<name>` from its last
    checkpoint; `config` may then be None (the run's own config is used) or a config that
    differs from it only in RESUMABLE_KEYS / RESUMABLE_PREFIXES.
    """

    def __init__(
        self,
        config: TrainConfig | dict | None,
        dataset: str | None = None,
        output_dir: str | None = None,
        name: str | None = None,
        resume: bool = False,
        device: str | None = None,
    ):
        self.resume = resume
        self.device_override = device
        if config is None and not resume:
            raise ConfigError("a config is needed to start a new training run")
        cfg = make_config(dict(config)) if config is not None else None
        if dataset:
            dataset = os.path.abspath(os.path.expanduser(dataset))
        if cfg is not None:
            if dataset:
                cfg["train"]["data"] = dataset
            elif cfg["train"]["data"]:
                cfg["train"]["data"] = os.path.abspath(os.path.expanduser(cfg["train"]["data"]))
            if output_dir:
                cfg["train"]["output_dir"] = output_dir
            if name:
                cfg["experiment"]["name"] = name
        run_name = name or (cfg["experiment"]["name"] if cfg else None)
        out = output_dir or (cfg["train"]["output_dir"] if cfg else None)
        if not run_name or not out:
            raise ConfigError("--resume without --config needs --name and --output")
        self.run_dir = os.path.abspath(os.path.join(os.path.expanduser(out), run_name))
        self.models_dir = os.path.join(self.run_dir, "models")
        self.logs_dir = os.path.join(self.run_dir, "logs")
        self.last_path = os.path.join(self.models_dir, "last.pth")
        self.resume_ckpt: dict | None = None
        if resume:
            if not os.path.isfile(self.last_path):
                raise ConfigError(
                    "nothing to resume: no models/last.pth in the run directory", path=self.run_dir
                )
            self.resume_ckpt = load_checkpoint(self.last_path)
            saved = make_config(self.resume_ckpt["config"], source=self.last_path)
            if cfg is None:
                cfg = saved
                if dataset:
                    cfg["train"]["data"] = dataset
            else:
                if not cfg["train"]["data"]:
                    cfg["train"]["data"] = saved["train"]["data"]
                changed = [
                    k
                    for k in config_differences(saved, cfg)
                    if k not in RESUMABLE_KEYS and not k.startswith(RESUMABLE_PREFIXES)
                ]
                if changed:
                    raise ConfigError(
                        f"config key '{changed[0]}' differs from the run being resumed "
                        "(only train.num_epochs and logging/saving settings may change)",
                        path=self.run_dir,
                    )
            cfg["train"]["output_dir"] = out
        elif os.path.exists(self.last_path):
            raise ConfigError(
                "run directory already holds a training run; pass --resume to continue it or choose another --name",
                path=self.run_dir,
            )
        if not cfg["train"]["data"]:
            raise ConfigError("no dataset given (--dataset or train.data)")
        if cfg["train"]["frame_stack"] != 1:
            raise ConfigError(
                "config key 'train.frame_stack' must be 1 for BC and BC-RNN (the RNN carries history)"
            )
        cfg["train"]["data"] = os.path.abspath(os.path.expanduser(cfg["train"]["data"]))
        self.config = TrainConfig(cfg)

    # ------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        if self.device_override:
            return torch.device(self.device_override)
        if self.config["train"]["cuda"] and torch.cuda.is_available():
            return torch.device("cuda", self.dist.local_rank)
        return torch.device("cpu")

    def _build(self) -> None:
        cfg = self.config
        self.facts: DatasetFacts = describe_dataset(cfg, cfg["train"]["data"])
        self.train_set = make_sequence_dataset(cfg, self.facts, self.facts.train_filter_key)
        self.valid_set = None
        if self.facts.valid_filter_key is not None:
            self.valid_set = make_sequence_dataset(cfg, self.facts, self.facts.valid_filter_key)
        if self.resume_ckpt is not None:
            obs_stats = self.resume_ckpt.get("obs_normalization_stats")
            act_stats = self.resume_ckpt.get("action_normalization_stats")
            share_action_stats(self.train_set, act_stats)
        else:
            obs_stats = obs_normalization_stats(self.train_set, cfg)
            act_stats = action_normalization_stats(self.train_set, cfg)
        if self.valid_set is not None:
            share_action_stats(self.valid_set, act_stats)
        seed_everything(cfg["train"]["seed"])
        self.algo = BCAlgo(cfg, self.facts.shape_meta, obs_stats, act_stats, device=self.device)
        self.start_epoch = 0
        self.step = 0
        self.best = {"validation_loss": None, "success_rate": None}
        if self.resume_ckpt is not None:
            ck = self.resume_ckpt
            self.algo.net.load_state_dict(ck["model"])
            self.algo.optimizer.load_state_dict(ck["optimizer"])
            self.start_epoch = int(ck["epoch"])
            self.step = int(ck["step"])
            self.best.update((ck.get("extra") or {}).get("best", {}))
        self.algo.train_net = distributed.wrap_model(self.algo.net, self.dist, self.device)
        t = cfg["train"]
        exp = cfg["experiment"]
        self.train_sampler = EpochBatchSampler(
            len(self.train_set),
            t["batch_size"],
            exp["epoch_every_n_steps"],
            seed=t["seed"],
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.train_loader = make_loader(
            self.train_set, self.train_sampler, t["num_data_workers"], t["seed"]
        )
        self.valid_loader = None
        if self.valid_set is not None and len(self.valid_set) > 0:
            self.valid_sampler = EpochBatchSampler(
                len(self.valid_set),
                t["batch_size"],
                exp["validation_epoch_every_n_steps"],
                seed=t["seed"] + 7919,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
            )
            if exp["validation_epoch_every_n_steps"] is None:
                self.valid_sampler.num_batches = max(
                    1, -(-len(self.valid_set) // (t["batch_size"] * self.dist.world_size))
                )
            self.valid_loader = make_loader(
                self.valid_set, self.valid_sampler, t["num_data_workers"], t["seed"] + 1
            )

    def _open_logs(self) -> None:
        self.tb = None
        self.log_txt = None
        if not self.dist.is_main:
            return
        os.makedirs(self.models_dir, exist_ok=True)
        os.makedirs(self.logs_dir, exist_ok=True)
        with open(os.path.join(self.run_dir, "config.json"), "w", encoding="utf-8") as fh:
            fh.write(self.config.to_json())
        logging = self.config["experiment"]["logging"]
        if logging["log_tb"]:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=self.logs_dir)
        if logging["terminal_output_to_txt"]:
            self.log_txt = open(os.path.join(self.logs_dir, "log.txt"), "a", encoding="utf-8")  # noqa: SIM115

    def _close_logs(self) -> None:
        if getattr(self, "tb", None) is not None:
            self.tb.flush()
            self.tb.close()
        if getattr(self, "log_txt", None) is not None:
            self.log_txt.close()

    # ------------------------------------------------------------------------------------
    def _run_epoch(
        self, loader, validate: bool, progress: Callable[[int, int], None] | None
    ) -> dict[str, float]:
        """One epoch; returns mean losses plus timing (data wait vs compute, seconds)."""
        sums: dict[str, float] = {}
        n = 0
        samples = 0
        data_time = 0.0
        compute_time = 0.0
        total = len(loader.batch_sampler)
        start = time.perf_counter()
        it = iter(loader)
        for i in range(total):
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            processed = self.algo.process_batch(batch)
            if validate:
                log = self.algo.validate_on_batch(processed)
            else:
                log = self.algo.train_on_batch(processed)
                self.step += 1
            t2 = time.perf_counter()
            data_time += t1 - t0
            compute_time += t2 - t1
            samples += _batch_size(batch)
            for k, v in log.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            if progress is not None:
                progress(i + 1, total)
        elapsed = time.perf_counter() - start
        out = {k: v / max(n, 1) for k, v in sums.items()}
        out.update(
            steps=n,
            time_data_s=data_time,
            time_compute_s=compute_time,
            time_epoch_s=elapsed,
            samples_per_s=samples * self.dist.world_size / elapsed if elapsed > 0 else 0.0,
            data_wait_fraction=data_time / (data_time + compute_time)
            if (data_time + compute_time) > 0
            else 0.0,
        )
        return out

    def _log(self, epoch: int, record: dict[str, Any]) -> None:
        if self.tb is not None:
            for split in ("train", "valid"):
                for k, v in (record.get(split) or {}).items():
                    if k.startswith("time_") or k in (
                        "samples_per_s",
                        "data_wait_fraction",
                        "steps",
                    ):
                        if split == "train":
                            self.tb.add_scalar(f"Timing/{k}", v, epoch)
                        continue
                    self.tb.add_scalar(f"{split.capitalize()}/{k}", v, epoch)
            self.tb.add_scalar("Train/learning_rate", record["lr"], epoch)
            for k, v in (record.get("rollout") or {}).items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"Rollout/{k}", v, epoch)
            self.tb.flush()
        if self.log_txt is not None:
            self.log_txt.write(json.dumps(record) + "\n")
            self.log_txt.flush()

    def _save(self, path: str, epoch: int, training_state: bool = True) -> str:
        ckpt = make_checkpoint(
            self.algo,
            epoch,
            self.step,
            self.facts.env_meta,
            self.facts.path,
            training_state=training_state,
            extra={"best": dict(self.best)},
        )
        return save_checkpoint(path, ckpt)

    def _maybe_rollout(self, epoch: int, rollout_fn) -> dict[str, Any] | None:
        r = self.config["experiment"]["rollout"]
        if not r["enabled"] or epoch <= r["warmstart"] or epoch % r["rate"] != 0:
            return None
        if rollout_fn is None:
            from demoset.train.rollout import rollout_stats_for_training

            rollout_fn = rollout_stats_for_training
        return rollout_fn(self.algo, self.facts.env_meta, self.config, epoch, self.run_dir)

    def run(
        self,
        progress: Callable[[int, int], None] | None = None,
        on_epoch_start: Callable[[int, int], None] | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        rollout_fn: Callable | None = None,
    ) -> TrainResult:
        """Train to train.num_epochs (or until `should_stop()` is true after an epoch).

        `on_epoch_start(epoch, num_epochs)`, `progress(step, steps)` within an epoch and
        `on_epoch_end(epoch, record)` let a caller draw progress bars; they run on every
        process (the CLI draws only on rank 0).
        """
        self.dist = distributed.init_from_env(use_cuda=bool(self.config["train"]["cuda"]))
        self.device = self._device()
        history: list[dict[str, Any]] = []
        stopped = False
        epoch = None
        try:
            self._build()
            self._open_logs()
            if self.resume_ckpt is not None:
                set_rng_state(self.resume_ckpt["rng"])
                self.resume_ckpt = None
            exp = self.config["experiment"]
            save = exp["save"]
            num_epochs = self.config["train"]["num_epochs"]
            self._last_timed_save = time.monotonic()
            epoch = self.start_epoch
            for epoch in range(self.start_epoch + 1, num_epochs + 1):
                lr = self.algo.set_epoch(epoch)
                if on_epoch_start is not None:
                    on_epoch_start(epoch, num_epochs)
                self.train_sampler.set_epoch(epoch)
                record: dict[str, Any] = {"epoch": epoch, "step": self.step, "lr": lr}
                record["train"] = self._run_epoch(
                    self.train_loader, validate=False, progress=progress
                )
                record["step"] = self.step
                if self.valid_loader is not None:
                    self.valid_sampler.set_epoch(epoch)
                    record["valid"] = self._run_epoch(
                        self.valid_loader, validate=True, progress=None
                    )
                if self.dist.is_main:
                    record["rollout"] = self._maybe_rollout(epoch, rollout_fn)
                    self._save_for_epoch(epoch, record, save)
                    self._log(epoch, record)
                    # the resume point, written last so it carries every bit of this epoch's state
                    self._save(self.last_path, epoch)
                distributed.barrier(self.dist)
                history.append(record)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
                stop = bool(should_stop()) if should_stop is not None else False
                if distributed.any_rank(stop, self.dist, self.device):
                    stopped = epoch < num_epochs
                    break
        finally:
            self._close_logs()
            distributed.shutdown(self.dist)
        last = self.last_path if os.path.exists(self.last_path) else None
        return TrainResult(
            run_dir=self.run_dir,
            last_checkpoint=last,
            epochs_done=epoch or 0,
            steps_done=self.step,
            history=history,
            stopped_early=stopped,
        )

    def _save_for_epoch(self, epoch: int, record: dict, save: dict) -> None:
        if not save["enabled"]:
            return
        reasons = []
        every = save["every_n_epochs"]
        if every and epoch % every == 0:
            reasons.append("every_n_epochs")
        if epoch in (save["epochs"] or []):
            reasons.append("epochs")
        if (
            save["every_n_seconds"]
            and time.monotonic() - self._last_timed_save >= save["every_n_seconds"]
        ):
            self._last_timed_save = time.monotonic()
            reasons.append("every_n_seconds")
        valid = record.get("valid")
        if valid is not None and "action_loss" in valid:
            best = self.best.get("validation_loss")
            if best is None or valid["action_loss"] < best:
                self.best["validation_loss"] = valid["action_loss"]
                if save["on_best_validation"]:
                    self._save(
                        os.path.join(self.models_dir, "best_validation.pth"),
                        epoch,
                        training_state=False,
                    )
        rollout = record.get("rollout")
        if rollout is not None:
            best = self.best.get("success_rate")
            if best is None or rollout["success_rate"] > best:
                self.best["success_rate"] = rollout["success_rate"]
                if save["on_best_rollout_success_rate"]:
                    self._save(
                        os.path.join(self.models_dir, "best_success.pth"),
                        epoch,
                        training_state=False,
                    )
        if reasons:
            self._save(
                os.path.join(self.models_dir, f"model_epoch_{epoch}.pth"),
                epoch,
                training_state=False,
            )
