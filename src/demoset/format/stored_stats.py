"""Statistics that travel with the data: per demo, per key, in a group robomimic ignores.

Layout (`demoset_stats/` at the top of the file; robomimic reads only `data/` and `mask/`):

```
demoset_stats/                 attrs: version, relative_accuracy, zero_limit
  <demo>/<key>/                e.g. demo_0/actions, demo_0/obs/robot0_eef_pos
    attrs: count (frames)
    moments                    float64 (4, per-step shape): mean, M2, min, max
    sketch                     int64 (2, K): the quantile sketch's keys and counts
                               (demoset.format.quantiles)
```

Keys are the arrays training normalises: `actions`, `action_dict/*` and the non-image
arrays of `obs/`, taken as the loaders read them (actions in float32), so the loader's
normalisation from stored statistics equals the one from a pass over the arrays. Mean and M2 (the sum of squared deviations) are kept rather than the sum
and sum of squares they are equivalent to (sum = count * mean, sum of squares = M2 +
count * mean**2): Chan's merge of (count, mean, M2) stays exact where a sum of squares loses
digits when the mean is large against the spread. Merged in demo order they give the same
moments as one pass over the arrays; the sketch gives q01/q99 within its stated bound for
any union of demos (a filter key, a merge) without reading the arrays again.

A demo's statistics are trusted only while their count equals the demo's length; any
other mismatch makes the reader return None, and the caller computes from the arrays.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from demoset.errors import LayoutError, WriteError
from demoset.format import constants as C
from demoset.format.demofile import DemoFile, open_dataset
from demoset.format.quantiles import RELATIVE_ACCURACY, ZERO_LIMIT, QuantileSketch

STATS_GROUP = "demoset_stats"
VERSION = 1
Progress = Callable[[int, int], None]


@dataclass
class KeyStats:
    """Count, mean, M2, min, max and quantile sketch of one key over some frames."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    sketch: QuantileSketch

    @classmethod
    def of(cls, values: np.ndarray) -> KeyStats:
        part = np.asarray(values).astype(np.float64)
        mean = part.mean(axis=0)
        return cls(
            len(part),
            mean,
            ((part - mean) ** 2).sum(axis=0),
            part.min(axis=0),
            part.max(axis=0),
            QuantileSketch.of(part),
        )

    def merge(self, other: KeyStats) -> KeyStats:
        """Chan et al.'s pairwise merge (the loader's own moments merge the same way)."""
        n = self.count + other.count
        delta = other.mean - self.mean
        return KeyStats(
            n,
            self.mean + delta * (other.count / n),
            self.m2 + other.m2 + delta**2 * (self.count * other.count / n),
            np.minimum(self.min, other.min),
            np.maximum(self.max, other.max),
            self.sketch.merge(other.sketch),
        )

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))

    def quantile(self, q: float) -> np.ndarray:
        """The q-quantile within the sketch's bound, clipped to [min, max] (where it lies)."""
        return np.clip(self.sketch.quantile(q).reshape(self.mean.shape), self.min, self.max)


def as_loaded(key: str, values: np.ndarray) -> np.ndarray:
    """Values as the loaders train on them: actions in float32 (robomimic's and demoset's
    loaders cast them), observations as stored; statistics of these equal the loader's own."""
    is_action = key == C.ACTIONS or key.startswith(C.ACTION_DICT + "/")
    return values.astype(np.float32) if is_action else values


def stats_keys(df: DemoFile, demo: str) -> list[str]:
    """The keys of a demo that get statistics: actions, action_dict/*, non-image obs."""
    keys = [C.ACTIONS] if df.has(demo, C.ACTIONS) else []
    keys += [f"{C.ACTION_DICT}/{k}" for k in df.action_dict_keys(demo)]
    keys += [f"{C.OBS}/{k}" for k, info in df.obs_keys(demo).items() if not info.is_image]
    return keys


def demo_stats(df: DemoFile, demo: str) -> dict[str, KeyStats]:
    """Statistics of every stats key of one demo, from its arrays."""
    n = df.num_samples(demo)
    out = {}
    for key in stats_keys(df, demo):
        values = df.read(demo, key)[:n]
        if n and np.issubdtype(values.dtype, np.number):
            out[key] = KeyStats.of(as_loaded(key, values))
    return out


def is_stats_key(key: str, step_shape: tuple, dtype) -> bool:
    """Whether an array (its path inside a demo) gets statistics: see the module docstring."""
    if not np.issubdtype(np.dtype(dtype), np.number):
        return False
    if key == C.ACTIONS or key.startswith(C.ACTION_DICT + "/"):
        return True
    return key.startswith(C.OBS + "/") and not C.is_image_shape(tuple(step_shape), dtype)


def stats_of_arrays(arrays: Mapping[str, Any], n: int) -> dict[str, KeyStats]:
    """Statistics of the stats keys among a demo's arrays (paths inside the demo -> arrays)."""
    out = {}
    for key, arr in arrays.items():
        if n and arr.ndim >= 1 and is_stats_key(key, arr.shape[1:], arr.dtype):
            out[key] = KeyStats.of(as_loaded(key, np.asarray(arr[:n])))
    return out


def group_stats(grp: h5py.Group) -> dict[str, KeyStats]:
    """Statistics of a demo group of a file demoset itself is writing."""
    arrays: dict[str, h5py.Dataset] = {}

    def collect(name, node) -> None:  # visititems stops at a value other than None
        # a name h5py cannot decode comes as bytes: it is no robomimic key (damaged files)
        if isinstance(name, str) and isinstance(node, h5py.Dataset):
            arrays[name] = node

    grp.visititems(collect)
    actions = arrays.get(C.ACTIONS)
    if actions is None or not actions.shape:
        return {}  # nothing to count steps by (a salvaged demo may hold num_samples only)
    return stats_of_arrays(arrays, int(actions.shape[0]))


def write_demo_stats(h5: h5py.File, demo: str, stats: dict[str, KeyStats]) -> None:
    """Store one demo's statistics (replacing what it had) in an open, writable file."""
    if STATS_GROUP not in h5:
        root = h5.create_group(STATS_GROUP)
        root.attrs["version"] = VERSION
        root.attrs["relative_accuracy"] = RELATIVE_ACCURACY
        root.attrs["zero_limit"] = ZERO_LIMIT
    root = h5[STATS_GROUP]
    if demo in root:
        del root[demo]
    for key, s in stats.items():
        grp = root.create_group(f"{demo}/{key}")
        grp.attrs["count"] = s.count
        grp.create_dataset("moments", data=np.stack([s.mean, s.m2, s.min, s.max]))
        grp.create_dataset("sketch", data=np.stack([s.sketch.keys, s.sketch.counts]))


def _read_one(grp: h5py.Group) -> KeyStats:
    moments = np.asarray(grp["moments"][()], dtype=np.float64)
    keys, counts = np.asarray(grp["sketch"][()], dtype=np.int64)
    dims = max(int(np.prod(moments.shape[1:], dtype=np.int64)), 1)
    return KeyStats(int(grp.attrs["count"]), *moments, QuantileSketch(dims, keys, counts))


def read_stats(
    h5: h5py.File, key: str, demos: Iterable[str], lengths: Iterable[int]
) -> list[KeyStats] | None:
    """The stored statistics of `key` for each demo, or None when any is missing or stale."""
    try:
        if STATS_GROUP not in h5 or h5[STATS_GROUP].attrs.get("version") != VERSION:
            return None
        root = h5[STATS_GROUP]
        out = []
        for demo, n in zip(demos, lengths):
            name = f"{demo}/{key}"
            if name not in root or not isinstance(root[name], h5py.Group):
                return None
            stats = _read_one(root[name])
            if stats.count != int(n):
                return None
            out.append(stats)
        return out
    except (OSError, KeyError, ValueError, TypeError):
        return None


def merged(parts: list[KeyStats]) -> KeyStats:
    """Statistics of the union of `parts`, merged in order."""
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total


def union_stats(
    path: str | os.PathLike, demos: list[str] | None = None, compute_missing: bool = True
) -> tuple[dict[str, KeyStats], bool]:
    """Per key, the statistics of `demos` (default all); and whether all came from storage."""
    path = os.fspath(path)
    with open_dataset(path) as df:
        demos = df.demos if demos is None else demos
        if not demos:
            raise LayoutError("no demos to summarise", path, "/data")
        lengths = [int(n) for n in df.lengths(demos)]
        stored = True
        per_key: dict[str, list[KeyStats]] = {}
        for key in stats_keys(df, demos[0]):
            parts = read_stats(df.h5, key, demos, lengths)
            if parts is None:
                if not compute_missing:
                    continue
                stored = False
                parts = [
                    KeyStats.of(as_loaded(key, df.read(d, key)[:n])) for d, n in zip(demos, lengths)
                ]
            per_key[key] = parts
    return {k: merged(v) for k, v in per_key.items() if v}, stored


def store_stats(path: str | os.PathLike, progress: Progress | None = None) -> int:
    """Compute and store every demo's statistics in the file itself (a journaled edit).

    Returns the number of demos. The edit is made through the journal, so an interruption
    leaves the file as it was or with every demo's statistics.
    """
    from demoset.format.journal import edit_in_place
    from demoset.fsutil import is_enospc

    path = os.fspath(path)
    with open_dataset(path) as df:
        computed = {}
        for i, demo in enumerate(df.demos):
            computed[demo] = demo_stats(df, demo)
            if progress:
                progress(i + 1, len(df.demos))
    try:
        with edit_in_place(path) as h5:
            if STATS_GROUP in h5:
                del h5[STATS_GROUP]
            for demo, stats in computed.items():
                write_demo_stats(h5, demo, stats)
    except OSError as exc:
        if is_enospc(exc):
            raise WriteError("no space left on device while storing statistics", path) from None
        raise WriteError(f"storing statistics failed ({str(exc).splitlines()[0]})", path) from None
    return len(computed)


def stats_summary(path: str | os.PathLike, filter_key: str | None = None) -> dict:
    """Per key: count, mean, std, min, max, q01 and q99 over a filter key's demos (or all).

    `stored` says whether every figure came from the statistics stored in the file; when
    not, they were computed from the arrays (and `demoset stats --store` would keep them).
    """
    path = os.fspath(path)
    with open_dataset(path) as df:
        demos = df.demos_for(filter_key)
    per_key, stored = union_stats(path, demos)
    keys = {}
    for key, s in per_key.items():
        keys[key] = {
            "count": s.count,
            "mean": s.mean.reshape(-1).tolist(),
            "std": s.std.reshape(-1).tolist(),
            "min": s.min.reshape(-1).tolist(),
            "max": s.max.reshape(-1).tolist(),
            "q01": s.quantile(0.01).reshape(-1).tolist(),
            "q99": s.quantile(0.99).reshape(-1).tolist(),
        }
    return {
        "path": path,
        "filter_key": filter_key,
        "demos": len(demos),
        "stored": stored,
        "quantile_relative_accuracy": RELATIVE_ACCURACY,
        "keys": keys,
    }
