"""One robomimic demo as plain arrays, for exporters that must give every value back.

Formats such as LeRobot and diffusion_policy's zarr store one observation per step and
no `next_obs`. robomimic's `next_obs[t]` is almost always `obs[t + 1]`, except at the
last step, where it is the observation after the final action. `read_demo` therefore
sorts a demo's next_obs into one of three modes, so an exporter keeps only what the
target cannot rebuild:

- "shift": next_obs is obs shifted by one; only the final row (`final_obs`) is kept.
- "stored": next_obs differs elsewhere too; it is kept whole.
- "none": the demo has no next_obs.

`write_demo` turns such a record back into a demo through DatasetWriter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demoset.errors import ConversionError, WriteError
from demoset.format import DatasetWriter, DemoFile

SHIFT, STORED, NONE = "shift", "stored", "none"


@dataclass
class DemoRecord:
    """Every array and attribute of one demo."""

    name: str
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    obs: dict[str, np.ndarray]
    next_obs_mode: str = NONE
    final_obs: dict[str, np.ndarray] = field(default_factory=dict)
    """The last row of each next_obs key (mode "shift")."""
    next_obs: dict[str, np.ndarray] = field(default_factory=dict)
    """Whole next_obs arrays (mode "stored")."""
    states: np.ndarray | None = None
    action_dict: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    """Demo attributes other than num_samples (model_file, ep_meta, ...)."""

    @property
    def steps(self) -> int:
        return int(self.actions.shape[0])


def read_demo(df: DemoFile, demo: str, obs_keys: list[str] | None = None) -> DemoRecord:
    """Read every array of `demo` (the obs keys given, or all) into a DemoRecord."""
    n = df.num_samples(demo)
    keys = list(df.obs_keys(demo)) if obs_keys is None else obs_keys
    obs = {k: df.read(demo, f"obs/{k}") for k in keys}
    actions = df.read(demo, "actions")
    rewards = df.read(demo, "rewards") if df.has(demo, "rewards") else np.zeros(n)
    if df.has(demo, "dones"):
        dones = df.read(demo, "dones")
    else:
        dones = np.zeros(n, dtype=np.int64)
        dones[-1] = 1
    rec = DemoRecord(demo, actions, rewards, dones, obs)
    if keys and all(df.has(demo, f"next_obs/{k}") for k in keys):
        next_obs = {k: df.read(demo, f"next_obs/{k}") for k in keys}
        shifted = all(
            np.array_equal(next_obs[k][:-1], obs[k][1:], equal_nan=obs[k].dtype.kind == "f")
            and next_obs[k].dtype == obs[k].dtype
            for k in keys
        )
        if shifted:
            rec.next_obs_mode = SHIFT
            rec.final_obs = {k: v[-1] for k, v in next_obs.items()}
        else:
            rec.next_obs_mode = STORED
            rec.next_obs = next_obs
    if df.has(demo, "states"):
        rec.states = df.read(demo, "states")
    rec.action_dict = {k: df.read(demo, f"action_dict/{k}") for k in df.action_dict_keys(demo)}
    group_attrs = df.group(demo).attrs
    rec.attrs = {k: group_attrs[k] for k in group_attrs.keys() if k != "num_samples"}
    return rec


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def write_demo(writer: DatasetWriter, rec: DemoRecord) -> str:
    """Append `rec` as a demo of `writer` (under its own name) and return the name."""
    attrs = dict(rec.attrs)
    model_file = _text(attrs.pop("model_file", None))
    ep_meta = _text(attrs.pop("ep_meta", None))
    kwargs: dict[str, Any] = {}
    if rec.next_obs_mode == SHIFT:
        kwargs = {"derive_next_obs": True, "final_obs": rec.final_obs}
    elif rec.next_obs_mode == STORED:
        kwargs = {"next_obs": rec.next_obs}
    return writer.add_demo(
        actions=rec.actions,
        obs=rec.obs,
        rewards=rec.rewards,
        dones=rec.dones,
        states=rec.states,
        model_file=model_file,
        ep_meta=ep_meta,
        action_dict=rec.action_dict or None,
        attrs=attrs or None,
        name=rec.name,
        **kwargs,
    )


def language_instruction(attrs: dict[str, Any]) -> str | None:
    """The language instruction of a demo's ep_meta JSON ("lang"), if there is one."""
    text = _text(attrs.get("ep_meta"))
    if not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    lang = meta.get("lang") if isinstance(meta, dict) else None
    return lang if isinstance(lang, str) and lang else None


def filter_keys_of(df: DemoFile, demos: list[str]) -> dict[str, list[str]]:
    """The file's filter keys restricted to `demos` (keys left empty are dropped)."""
    keep = set(demos)
    out = {}
    for key in df.filter_keys:
        members = [d for d in df.filter_key_demos(key) if d in keep]
        if members:
            out[key] = members
    return out


def plain_data_attrs(df: DemoFile) -> dict[str, Any]:
    """The /data attributes other than total and env_args, as JSON-friendly values."""
    out: dict[str, Any] = {}
    for key, value in df.data_attrs().items():
        if key in ("total", "env_args"):
            continue
        value = value.item() if isinstance(value, np.generic) else value
        value = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
        if isinstance(value, (str, int, float, bool)):
            out[key] = value
    return out


def check_export_target(target: str, overwrite: bool, make_parent: bool = False) -> None:
    """Refuse an export folder that exists (unless `overwrite`) or whose parent is missing."""
    if os.path.exists(target) and not overwrite:
        raise WriteError("exists; pass overwrite=True (--overwrite) to replace it", target)
    parent = os.path.dirname(target.rstrip(os.sep))
    if make_parent:
        os.makedirs(parent, exist_ok=True)
    elif not os.path.isdir(parent):
        raise WriteError(f"directory {parent} does not exist", target)


def demos_to_export(df: DemoFile, dataset: str, filter_key: str | None) -> list[str]:
    """The demos of `filter_key` (default all); refuses an export of none."""
    demos = df.demos_for(filter_key)
    if not demos:
        raise ConversionError(
            "no demos to export", dataset, f"/mask/{filter_key}" if filter_key else "/data"
        )
    return demos
