"""Edits of which arrays a demo holds: rename-key, drop-key, add-key.

A key names an array inside a group of every demo: `obs` (the default; next_obs follows so
the two stay paired), `action_dict`, or `dataset` for the arrays directly under a demo
(rewards, states, ...). `actions` is required by the layout and cannot be dropped or renamed.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Mapping

import h5py
import numpy as np

from demoset.editing.rewrite import Progress, RewriteResult, rewrite
from demoset.errors import ConfigError, LayoutError
from demoset.format import DemoFile, open_dataset
from demoset.format import constants as C

GROUPS = ("obs", "action_dict", "dataset")
KeyFunction = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def _places(group: str) -> list[str]:
    """Group paths inside a demo that a key of `group` lives in ("" is the demo itself)."""
    if group not in GROUPS:
        raise ConfigError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")
    return {"obs": [C.OBS, C.NEXT_OBS], "action_dict": [C.ACTION_DICT], "dataset": [""]}[group]


def _member(place: str, key: str) -> str:
    return f"{place}/{key}" if place else key


def _check_key_name(key: str, group: str) -> None:
    if not key or "/" in key or key.startswith("."):
        raise ConfigError(f"{key!r} is not a key name (no '/', not empty)")
    if group == "dataset" and key == C.ACTIONS:
        raise ConfigError("'actions' is required by the layout; it cannot be renamed or dropped")


def _require_everywhere(path: str, key: str, group: str) -> None:
    with open_dataset(path) as df:
        main = _member(_places(group)[0], key)
        for demo in df.demos:
            if not df.has(demo, main):
                raise LayoutError(f"no array {main!r}", path, f"/data/{demo}/{main}")


def rename_key(
    path: str | os.PathLike,
    out: str | os.PathLike,
    old: str,
    new: str,
    group: str = "obs",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteResult:
    """Write `out` with the array `old` of `group` renamed to `new` in every demo."""
    path = os.fspath(path)
    _check_key_name(old, group)
    _check_key_name(new, group)
    _require_everywhere(path, old, group)

    def edit(df: DemoFile, demo: str, grp: h5py.Group) -> None:
        for place in _places(group):
            src, dst = _member(place, old), _member(place, new)
            if src not in grp:
                continue
            if dst in grp:
                raise LayoutError(f"{new!r} exists already", path, f"/data/{demo}/{dst}")
            grp.move(src, dst)

    return rewrite(path, out, edit_demo=edit, overwrite=overwrite, progress=progress)


def drop_key(
    path: str | os.PathLike,
    out: str | os.PathLike,
    key: str,
    group: str = "obs",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteResult:
    """Write `out` without the array `key` of `group` in any demo."""
    path = os.fspath(path)
    _check_key_name(key, group)
    _require_everywhere(path, key, group)

    def edit(df: DemoFile, demo: str, grp: h5py.Group) -> None:
        for place in _places(group):
            if _member(place, key) in grp:
                del grp[_member(place, key)]

    return rewrite(path, out, edit_demo=edit, overwrite=overwrite, progress=progress)


class DemoArrays(Mapping):
    """A demo's arrays by name, read when first asked for (images only if used).

    Observation keys appear under their bare name, from `obs/` or `next_obs/` depending on
    which side is being computed; the demo's own arrays (actions, rewards, dones, states)
    keep theirs.
    """

    def __init__(self, df: DemoFile, demo: str, obs_group: str):
        self._df, self._demo, self._obs_group = df, demo, obs_group
        n = df.num_samples(demo)
        keys = df.obs_keys(demo) if obs_group == C.OBS else df.next_obs_keys(demo)
        self._paths = {key: f"{obs_group}/{key}" for key in keys}
        for key in (C.ACTIONS, C.REWARDS, C.DONES, C.STATES):
            if df.has(demo, key):
                self._paths.setdefault(key, key)
        self._n = n
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            if key not in self._paths:
                raise KeyError(key)
            self._cache[key] = self._df.read(self._demo, self._paths[key])[: self._n]
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def load_function(spec: str) -> KeyFunction:
    """The function named by 'module:function' (the user's own code, imported as asked)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"--from takes module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{module_name!r} has no function {name!r}")
    return fn


def add_key(
    path: str | os.PathLike,
    out: str | os.PathLike,
    name: str,
    fn: KeyFunction | str,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteResult:
    """Write `out` with a new observation `name` computed per demo by `fn`.

    `fn` gets a mapping of the demo's arrays (observations by bare key, plus actions,
    rewards, dones, states) and returns one row per step. It is called once with `obs/` and,
    where the demo has next_obs, once with `next_obs/`, so the two stay paired.
    """
    path = os.fspath(path)
    _check_key_name(name, "obs")
    function = load_function(fn) if isinstance(fn, str) else fn

    def edit(df: DemoFile, demo: str, grp: h5py.Group) -> None:
        n = df.num_samples(demo)
        for place in (C.OBS, C.NEXT_OBS):
            if place not in grp:
                continue
            target = f"{place}/{name}"
            if target in grp:
                raise LayoutError(f"{name!r} exists already", path, f"/data/{demo}/{target}")
            try:
                value = np.asarray(function(DemoArrays(df, demo, place)))
            except Exception as exc:
                raise ConfigError(
                    f"the function for {name!r} failed: {type(exc).__name__}: {exc}",
                    path,
                    f"/data/{demo}/{place}",
                ) from None
            if value.ndim == 0 or value.shape[0] != n or value.dtype == object:
                raise ConfigError(
                    f"the function for {name!r} returned shape {value.shape}, "
                    f"dtype {value.dtype}; it must return {n} rows of numbers",
                    path,
                    f"/data/{demo}/{place}",
                )
            if value.ndim == 1:
                value = value[:, None]
            grp[place].create_dataset(name, data=value)

    return rewrite(path, out, edit_demo=edit, overwrite=overwrite, progress=progress)
