"""DemoFile: the read-only view of one robomimic-layout dataset.

Everything other parts of demoset read goes through here, so that a bad file fails in
one place with one clear message. It never writes, and it refuses external links and
virtual datasets that point outside the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from demoset.errors import DemoNotFoundError, FilterKeyError, LayoutError
from demoset.format import constants as C
from demoset.format.env_meta import EnvMeta, attr_int, attr_text, parse_env_args
from demoset.format.guards import guarded_method, h5_errors
from demoset.format.h5io import (
    check_dataset_safe,
    check_dataset_size,
    check_link_safe,
    open_h5,
    read_array,
)
from demoset.format.locking import COMMIT_WAIT, reader_gate

MAX_DEPTH = 4
"""Deepest nesting of groups under a demo that is listed (obs/<key> is depth 2)."""


def _step_shape(dset: h5py.Dataset) -> tuple[int, ...]:
    """Per-step shape of an array; () for scalars and empty dataspaces."""
    shape = dset.shape
    return tuple(shape[1:]) if shape else ()


def _names(group: h5py.Group) -> list[str]:
    """Member names of a group that are text (names that are not UTF-8 are skipped)."""
    return sorted(name for name in group.keys() if isinstance(name, str))


@dataclass(frozen=True)
class ArrayInfo:
    """Per-step shape and dtype of one array (the leading time axis left out)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def is_image(self) -> bool:
        return self.dtype == np.uint8 and C.is_image_shape(self.shape, self.dtype)

    def describe(self) -> str:
        return f"{self.dtype} {tuple(self.shape)}"


class DemoFile:
    """A robomimic-layout HDF5 file opened read-only.

    Use `open_dataset(path)` to get one; close it (or use `with`) when done. Whatever h5py
    raises on a damaged or hostile file comes out of these methods as a LayoutError (or
    another DemosetError) naming the file; arrays that declare far more bytes than the
    file stores, and reads that would not fit in memory, are refused before allocating.
    """

    def __init__(self, path: str | os.PathLike, swmr: bool = False, lock_timeout: float = 0.0):
        self.path = os.fspath(path)
        self.swmr = swmr
        self.lock_timeout = lock_timeout
        self.h5: h5py.File = (
            self._open_following() if swmr else open_h5(self.path, "r", lock_timeout=lock_timeout)
        )
        try:
            with h5_errors(self.path):
                self._load_index()
        except BaseException:
            self.h5.close()
            raise

    def _open_following(self) -> h5py.File:
        """Open a file a follow-mode writer may be appending to (see format/locking.py).

        HDF5's own lock is left off, so a reader that keeps the file open does not hold
        up the writer's commits; `open_h5` passes the commit gate as every reader does.
        """
        return open_h5(self.path, "r", lock_timeout=self.lock_timeout, locking=False)

    # ------------------------------------------------------------------ index
    def _load_index(self) -> None:
        if C.DATA_GROUP not in self.h5:
            raise LayoutError("no 'data' group: not a robomimic-layout dataset", self.path, "/data")
        check_link_safe(self.h5, C.DATA_GROUP, self.path)
        data = self.h5[C.DATA_GROUP]
        if not isinstance(data, h5py.Group):
            raise LayoutError("'data' is not a group", self.path, "/data")
        self._data = data
        names = []
        for name in _names(data):
            check_link_safe(data, name, self.path)
            names.append(name)
        self._demos = C.sorted_demos(names)
        self._demo_set = set(self._demos)

    def refresh(self) -> list[str]:
        """Re-read the demo list (after a writer appended demos); returns the new demos."""
        before = set(self._demos)
        with h5_errors(self.path):
            if self.swmr:
                try:
                    self.h5.close()
                except Exception:  # noqa: BLE001 - closing a stale handle must not hide the reopen
                    pass
                with reader_gate(self.path, max(self.lock_timeout, COMMIT_WAIT)):
                    self.h5 = open_h5(self.path, "r", lock_timeout=self.lock_timeout, locking=False)
                    self._load_index()
            else:
                self._load_index()
        return [d for d in self._demos if d not in before]

    # ------------------------------------------------------------------ context
    def close(self) -> None:
        try:
            self.h5.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> DemoFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DemoFile({self.path!r}, demos={len(self._demos)})"

    # ------------------------------------------------------------------ demos
    @property
    def demos(self) -> list[str]:
        """All demo names under data/, in numeric order (demo_2 before demo_10)."""
        return list(self._demos)

    def __len__(self) -> int:
        return len(self._demos)

    @guarded_method
    def group(self, demo: str) -> h5py.Group:
        """The h5py group of one demo (raises DemoNotFoundError).

        Only names listed under data/ are accepted: a name such as "/mask/train" or
        "demo_0/obs" must not reach other objects of the file.
        """
        if not isinstance(demo, str) or demo not in self._demo_set:
            raise DemoNotFoundError(f"no demo named {demo!r}", self.path, f"/data/{demo}")
        check_link_safe(self._data, demo, self.path)
        grp = self._data[demo]
        if not isinstance(grp, h5py.Group):
            raise LayoutError("demo is not a group", self.path, f"/data/{demo}")
        return grp

    @guarded_method
    def num_samples(self, demo: str) -> int:
        """Length of a demo: its `num_samples` attribute, else the length of `actions`.

        A num_samples larger than `actions` is refused (LayoutError): trusting it would
        index past the data, or allocate for steps that do not exist.
        """
        grp = self.group(demo)
        value = (
            attr_int(grp.attrs.get(C.ATTR_NUM_SAMPLES)) if C.ATTR_NUM_SAMPLES in grp.attrs else None
        )
        n_actions = None
        if C.ACTIONS in grp:
            check_link_safe(grp, C.ACTIONS, self.path)
            actions = grp[C.ACTIONS]
            if isinstance(actions, h5py.Dataset) and actions.shape:
                n_actions = int(actions.shape[0])
        if value is not None and value >= 0:
            if n_actions is not None and value > n_actions:
                raise LayoutError(
                    f"num_samples is {value} but actions has only {n_actions} steps",
                    self.path,
                    f"/data/{demo}",
                )
            return value
        if n_actions is not None:
            return n_actions
        raise LayoutError("demo has neither num_samples nor actions", self.path, f"/data/{demo}")

    def lengths(self, demos: list[str] | None = None) -> np.ndarray:
        """num_samples of the given demos (default all), as an int64 array."""
        demos = self._demos if demos is None else demos
        return np.array([self.num_samples(d) for d in demos], dtype=np.int64)

    @property
    @guarded_method
    def total(self) -> int | None:
        """The `data/total` attribute (None when missing or not an integer)."""
        if C.ATTR_TOTAL not in self._data.attrs:
            return None
        return attr_int(self._data.attrs[C.ATTR_TOTAL])

    # ------------------------------------------------------------------ meta
    @property
    @guarded_method
    def env_meta(self) -> EnvMeta | None:
        """Parsed `data/env_args`, or None when the attribute is absent."""
        if C.ATTR_ENV_ARGS not in self._data.attrs:
            return None
        return parse_env_args(self._data.attrs[C.ATTR_ENV_ARGS], self.path)

    @guarded_method
    def data_attrs(self) -> dict[str, Any]:
        return {k: self._data.attrs[k] for k in self._data.attrs.keys()}

    @guarded_method
    def demo_attrs(self, demo: str) -> dict[str, Any]:
        """Attributes of one demo; text attributes decoded (model_file, ep_meta stay text)."""
        grp = self.group(demo)
        out: dict[str, Any] = {}
        for key in grp.attrs.keys():
            value = grp.attrs[key]
            if isinstance(value, (bytes, str)):
                value = attr_text(value)
            out[key] = value
        return out

    @property
    @guarded_method
    def is_raw_robosuite(self) -> bool:
        """A robosuite collection file: states and actions but no obs, attrs env / env_info."""
        attrs = self._data.attrs
        if "env" in attrs and C.ATTR_ENV_ARGS not in attrs:
            return True
        if not self._demos:
            return False
        check_link_safe(self._data, self._demos[0], self.path)
        grp = self._data[self._demos[0]]
        return isinstance(grp, h5py.Group) and C.STATES in grp and C.OBS not in grp

    # ------------------------------------------------------------------ filter keys
    @property
    @guarded_method
    def filter_keys(self) -> list[str]:
        """Names of the filter keys under mask/, sorted."""
        if C.MASK_GROUP not in self.h5:
            return []
        check_link_safe(self.h5, C.MASK_GROUP, self.path)
        mask = self.h5[C.MASK_GROUP]
        if not isinstance(mask, h5py.Group):
            return []
        return _names(mask)

    @guarded_method
    def filter_key_demos(self, key: str) -> list[str]:
        """Demos named by filter key `key`, in stored order (raises FilterKeyError)."""
        if key not in self.filter_keys:
            known = ", ".join(self.filter_keys) or "none"
            raise FilterKeyError(
                f"no filter key {key!r} (filter keys: {known})", self.path, f"/mask/{key}"
            )
        check_link_safe(self.h5[C.MASK_GROUP], key, self.path)
        dset = self.h5[C.MASK_GROUP][key]
        if not isinstance(dset, h5py.Dataset):
            raise LayoutError("filter key is not a dataset", self.path, f"/mask/{key}")
        values = np.atleast_1d(read_array(dset, self.path)).reshape(-1)
        out = []
        for v in values.tolist():
            out.append(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v))
        return out

    def demos_for(self, filter_key: str | None = None, check: bool = True) -> list[str]:
        """Demos of a filter key in numeric order (all demos when None).

        With `check`, a filter key naming demos that are not in the file raises.
        """
        if filter_key is None:
            return self.demos
        demos = self.filter_key_demos(filter_key)
        if check:
            missing = [d for d in demos if d not in self._demo_set]
            if missing:
                raise FilterKeyError(
                    f"filter key names demos that do not exist: {', '.join(missing[:5])}",
                    self.path,
                    f"/mask/{filter_key}",
                )
        return C.sorted_demos(demos)

    # ------------------------------------------------------------------ arrays
    @guarded_method
    def _sub_keys(self, demo: str, group_name: str) -> dict[str, ArrayInfo]:
        grp = self.group(demo)
        if group_name not in grp:
            return {}
        check_link_safe(grp, group_name, self.path)
        sub = grp[group_name]
        if not isinstance(sub, h5py.Group):
            raise LayoutError(f"'{group_name}' is not a group", self.path, sub.name)
        out = {}
        for key in _names(sub):
            check_link_safe(sub, key, self.path)
            dset = sub[key]
            if isinstance(dset, h5py.Dataset):
                out[key] = ArrayInfo(_step_shape(dset), dset.dtype)
        return out

    def first_demo(self) -> str:
        if not self._demos:
            raise LayoutError("the file has no demos", self.path, "/data")
        return self._demos[0]

    def obs_keys(self, demo: str | None = None) -> dict[str, ArrayInfo]:
        """Observation keys of a demo (default the first) with per-step shape and dtype."""
        return self._sub_keys(demo or self.first_demo(), C.OBS)

    def next_obs_keys(self, demo: str | None = None) -> dict[str, ArrayInfo]:
        return self._sub_keys(demo or self.first_demo(), C.NEXT_OBS)

    def action_dict_keys(self, demo: str | None = None) -> dict[str, ArrayInfo]:
        return self._sub_keys(demo or self.first_demo(), C.ACTION_DICT)

    @guarded_method
    def array_keys(self, demo: str | None = None) -> dict[str, ArrayInfo]:
        """Every array of a demo by its path relative to the demo ("actions", "obs/x", ...)."""
        demo = demo or self.first_demo()
        grp = self.group(demo)
        out: dict[str, ArrayInfo] = {}

        def visit(g: h5py.Group, prefix: str, depth: int) -> None:
            if depth > MAX_DEPTH:
                raise LayoutError(
                    f"groups nested deeper than {MAX_DEPTH} levels (a link cycle?)",
                    self.path,
                    g.name,
                )
            for key in _names(g):
                check_link_safe(g, key, self.path)
                obj = g[key]
                if isinstance(obj, h5py.Dataset):
                    out[prefix + key] = ArrayInfo(_step_shape(obj), obj.dtype)
                elif isinstance(obj, h5py.Group):
                    visit(obj, prefix + key + "/", depth + 1)

        visit(grp, "", 1)
        return out

    @guarded_method
    def has(self, demo: str, key: str) -> bool:
        grp = self.group(demo)
        if key not in grp:
            return False
        try:
            return isinstance(self.dataset(demo, key), h5py.Dataset)
        except LayoutError:
            return False

    @guarded_method
    def dataset(self, demo: str, key: str) -> h5py.Dataset:
        """The h5py dataset `data/<demo>/<key>` after safety checks (raises LayoutError).

        Refuses links out of the file, virtual datasets reading other files, and arrays
        that declare far more bytes than the file stores for them.
        """
        grp = self.group(demo)
        parts = key.strip("/").split("/")
        node: h5py.Group = grp
        for part in parts[:-1]:
            if part not in node:
                raise LayoutError(f"no array {key!r}", self.path, f"{grp.name}/{key}")
            check_link_safe(node, part, self.path)
            node = node[part]
            if not isinstance(node, h5py.Group):
                raise LayoutError(f"{part!r} is not a group", self.path, node.name)
        if parts[-1] not in node:
            raise LayoutError(f"no array {key!r}", self.path, f"{grp.name}/{key}")
        check_link_safe(node, parts[-1], self.path)
        dset = node[parts[-1]]
        if not isinstance(dset, h5py.Dataset):
            raise LayoutError(f"{key!r} is not a dataset", self.path, dset.name)
        if dset.shape is None:
            raise LayoutError("the array has no data (empty dataspace)", self.path, dset.name)
        check_dataset_safe(dset, self.path)
        check_dataset_size(dset, self.path)
        return dset

    def read(
        self, demo: str, key: str, start: int | None = None, stop: int | None = None
    ) -> np.ndarray:
        """Read `data/<demo>/<key>` (e.g. "actions", "obs/agentview_image"), optionally a slice.

        A read that would not fit in memory raises InsufficientMemoryError before allocating.
        """
        dset = self.dataset(demo, key)
        if dset.shape == () or (start is None and stop is None):
            return read_array(dset, self.path)
        return read_array(dset, self.path, slice(start, stop))


def open_dataset(
    path: str | os.PathLike, swmr: bool = False, lock_timeout: float | None = None
) -> DemoFile:
    """Open a robomimic-layout dataset read-only.

    With `swmr=True` the file may be growing: opening waits (up to `lock_timeout`, default
    30 s) while a demoset writer commits a demo, and `DemoFile.refresh()` picks up new demos.
    """
    if lock_timeout is None:
        lock_timeout = 30.0 if swmr else 0.0
    return DemoFile(path, swmr=swmr, lock_timeout=lock_timeout)
