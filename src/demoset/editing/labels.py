"""Edits of what a demo says about itself: rewards/dones (relabel) and ep_meta (set-meta).

Success is read from the stored rewards: a step whose reward reaches `success_reward` (1 for
robosuite's sparse reward) is a success step. The done modes are robomimic's `--done_mode`:
"success" (0) marks success steps, "last" (1) the last step only, "both" (2) either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np

from demoset.editing.demos import SUCCESS_REWARD
from demoset.editing.rewrite import Progress, RewriteResult, replace_dataset, rewrite
from demoset.errors import ConfigError, LayoutError
from demoset.format import DemoFile, open_dataset
from demoset.format import constants as C

DONE_MODES = ("success", "last", "both")
REWARD_MODES = ("sparse",)
LANGUAGE_KEY = "lang"
"""The ep_meta key holding a demo's language instruction (as robomimic/robocasa files use)."""


def _write_steps(grp: h5py.Group, name: str, values: np.ndarray) -> None:
    if name in grp:
        replace_dataset(grp, name, values.astype(grp[name].dtype, copy=False))
    else:
        grp.create_dataset(name, data=values)


def relabel(
    path: str | os.PathLike,
    out: str | os.PathLike,
    rewards: str | None = None,
    dones: str | None = None,
    success_reward: float = SUCCESS_REWARD,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteResult:
    """Write `out` with rewards made sparse (1 at success steps) and/or dones recomputed."""
    path = os.fspath(path)
    if rewards is None and dones is None:
        raise ConfigError("choose --rewards and/or --dones to relabel")
    if rewards is not None and rewards not in REWARD_MODES:
        raise ConfigError(f"--rewards must be one of {', '.join(REWARD_MODES)}, got {rewards!r}")
    if dones is not None and dones not in DONE_MODES:
        raise ConfigError(f"--dones must be one of {', '.join(DONE_MODES)}, got {dones!r}")

    def edit(df: DemoFile, demo: str, grp: h5py.Group) -> None:
        n = df.num_samples(demo)
        if not df.has(demo, C.REWARDS):
            raise LayoutError("no rewards to tell success from", path, f"/data/{demo}/rewards")
        success = df.read(demo, C.REWARDS)[:n] >= success_reward
        if rewards == "sparse":
            _write_steps(grp, C.REWARDS, success.astype(np.float64))
        if dones is not None:
            last = np.arange(n) == n - 1
            done = {"success": success, "last": last, "both": success | last}[dones]
            _write_steps(grp, C.DONES, done.astype(np.int64))

    return rewrite(path, out, edit_demo=edit, overwrite=overwrite, progress=progress)


def _parse_ep_meta(raw: Any, path: str, demo: str) -> dict:
    if raw is None:
        return {}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        value = json.loads(text)
    except ValueError:
        raise LayoutError("ep_meta is not JSON", path, f"/data/{demo}.attrs[ep_meta]") from None
    if not isinstance(value, dict):
        raise LayoutError("ep_meta is not a JSON object", path, f"/data/{demo}.attrs[ep_meta]")
    return value


def set_meta(
    path: str | os.PathLike,
    out: str | os.PathLike,
    values: Mapping[str, Any] | None = None,
    lang: str | None = None,
    demos: Iterable[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteResult:
    """Write `out` with `values` (and `lang`, the language instruction) merged into ep_meta.

    Applies to every demo, or to `demos`. ep_meta stays a JSON object; keys not named are
    kept as they were.
    """
    path = os.fspath(path)
    updates = dict(values or {})
    if lang is not None:
        updates[LANGUAGE_KEY] = lang
    if not updates:
        raise ConfigError("nothing to set: give --lang or --set KEY=VALUE")
    with open_dataset(path) as df:
        targets = set(df.demos if demos is None else demos)
        for d in targets:
            df.group(d)

    def edit(df: DemoFile, demo: str, grp: h5py.Group) -> None:
        if demo not in targets:
            return
        meta = _parse_ep_meta(grp.attrs.get(C.ATTR_EP_META), path, demo)
        meta.update(updates)
        grp.attrs[C.ATTR_EP_META] = json.dumps(meta)

    return rewrite(path, out, edit_demo=edit, overwrite=overwrite, progress=progress)
