"""Checkpoints: everything needed to act with a policy or to resume its training.

A checkpoint is a dict of tensors and plain JSON-able values (config, normalisation
statistics, environment meta, RNG state as lists), so it loads with
`torch.load(weights_only=True)`: opening one never runs code from the file.
Files are written to a temporary name and renamed, so a crash mid-save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from demoset.errors import ConfigError, FileAccessError
from demoset.fsutil import atomic_output
from demoset.train.algos import BCAlgo, ShapeMeta
from demoset.train.config import make_config

FORMAT = "demoset.train.checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in weights_only-loadable form."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    st = state["numpy"]
    np.random.set_state((st[0], np.asarray(st[1], dtype=np.uint32), st[2], st[3], st[4]))
    torch.set_rng_state(state["torch"])


def make_checkpoint(
    algo: BCAlgo,
    epoch: int,
    step: int,
    env_meta: dict | None,
    dataset: str | None,
    training_state: bool = True,
    extra: dict | None = None,
) -> dict[str, Any]:
    """The checkpoint dict; `training_state` adds optimizer and RNG state for resuming."""
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "algo": algo.config.algo_label,
        "config": dict(algo.config),
        "shape_meta": dict(algo.shape_meta),
        "obs_normalization_stats": algo.normalizer.obs_stats,
        "action_normalization_stats": algo.normalizer.action_stats,
        "env_meta": env_meta,
        "dataset": dataset,
        "epoch": int(epoch),
        "step": int(step),
        "model": algo.net.state_dict(),
    }
    if training_state:
        ckpt["optimizer"] = algo.optimizer.state_dict()
        ckpt["rng"] = rng_state()
    if extra:
        ckpt["extra"] = extra
    return ckpt


def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> str:
    """Write atomically: a temporary file beside `path`, then a rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        torch.save(ckpt, fh)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only) and check it is one of ours."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileAccessError("checkpoint not found", path=path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileAccessError(f"not a readable checkpoint ({first})", path=path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FileAccessError("not a demoset training checkpoint", path=path)
    if ckpt.get("version", 0) > VERSION:
        raise FileAccessError(
            f"checkpoint version {ckpt.get('version')} is newer than this demoset", path=path
        )
    return ckpt


def algo_from_checkpoint(
    ckpt: dict[str, Any], device: str | torch.device = "cpu", path: str | None = None
) -> BCAlgo:
    """Rebuild the algorithm (network weights loaded) from a loaded checkpoint."""
    try:
        config = make_config(ckpt["config"], source=path)
    except ConfigError:
        raise
    algo = BCAlgo(
        config,
        ShapeMeta(ckpt["shape_meta"]),
        obs_stats=ckpt.get("obs_normalization_stats"),
        action_stats=ckpt.get("action_normalization_stats"),
        device=device,
    )
    algo.net.load_state_dict(ckpt["model"])
    return algo
