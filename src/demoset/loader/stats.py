"""Normalisation statistics: exact, vectorised, and cached beside the dataset.

For every array key the loader needs statistics of, it computes *moments* over all frames
of the selected demos: count, mean, sum of squared deviations (M2), min and max, in
float64, exactly (two-pass per block of frames, blocks merged with Chan et al.'s
formula). From the moments:

- observation statistics, robomimic's layout and semantics: `mean` of shape [1, ...] and
  `std = sqrt(M2 / n) + 1e-3` (population std plus robomimic's tolerance), float32.
- action normalisation, robomimic's `action_config` semantics: per action key,
  `normalized = (raw - offset) / scale` with
  - `None`: scale 1, offset 0;
  - `"min_max"`: maps [min, max] to [-0.999999, 0.999999]; dimensions whose range is
    below 1e-4 get scale 1.999998 / 1.999998... i.e. range 1.999998 and offset = min;
  - `"gaussian"`: offset = mean, scale = population std (dimensions with std below 1e-6
    get scale 1).

Moments are cached in a JSON file beside the dataset (`.<file name>.demoset-stats.json`;
in the user cache directory when that folder is not writable), one entry per array key and
demo selection, keyed by a hash of the file's size, modification time and inode, the
selected demos and their lengths, and the key. A second start reads them back instead of
recomputing; any write to the file changes the hash, so a changed file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from demoset.errors import ConfigError

CACHE_VERSION = 1
MAX_CACHE_ENTRIES = 256
OBS_STD_TOLERANCE = 1e-3
"""robomimic adds this to every observation std."""
MIN_MAX_OUTPUT = (-0.999999, 0.999999)
MIN_MAX_RANGE_EPS = 1e-4
GAUSSIAN_STD_EPS = 1e-6
NORMALIZATIONS = (None, "min_max", "gaussian")
BLOCK_ELEMENTS = 1 << 22


@dataclass
class Moments:
    """Count, mean, sum of squared deviations, min and max of one key (float64, per element)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    def merge(self, other: Moments) -> Moments:
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        return Moments(
            n, mean, m2, np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        )

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (robomimic's sqrt(M2 / n))."""
        return np.sqrt(self.m2 / max(self.n, 1))

    def to_json(self) -> dict:
        return {
            "n": int(self.n),
            "shape": list(self.mean.shape),
            "mean": self.mean.reshape(-1).tolist(),
            "m2": self.m2.reshape(-1).tolist(),
            "min": self.min.reshape(-1).tolist(),
            "max": self.max.reshape(-1).tolist(),
        }

    @classmethod
    def from_json(cls, entry: Mapping) -> Moments:
        shape = tuple(int(s) for s in entry["shape"])
        arrays = []
        for name in ("mean", "m2", "min", "max"):
            arr = np.asarray(entry[name], dtype=np.float64)
            if arr.size != int(np.prod(shape, dtype=np.int64)):
                raise ValueError("size mismatch")
            arrays.append(arr.reshape(shape))
        return cls(int(entry["n"]), *arrays)


def compute_moments(arrays: Iterable[np.ndarray]) -> Moments:
    """Exact moments over the frames (axis 0) of all `arrays`, in float64 blocks."""
    total: Moments | None = None
    for arr in arrays:
        arr = np.asarray(arr)
        per_frame = max(int(np.prod(arr.shape[1:], dtype=np.int64)), 1)
        block = max(BLOCK_ELEMENTS // per_frame, 1)
        for start in range(0, arr.shape[0], block):
            part = arr[start : start + block].astype(np.float64)
            mean = part.mean(axis=0)
            m2 = ((part - mean) ** 2).sum(axis=0)
            moments = Moments(part.shape[0], mean, m2, part.min(axis=0), part.max(axis=0))
            total = moments if total is None else total.merge(moments)
    if total is None:
        raise ConfigError("no frames to compute statistics from (no demos selected?)")
    return total


def merge_moments(parts: Iterable[Moments]) -> Moments:
    """Moments of the union of `parts`, merged in order (as compute_moments merges blocks)."""
    total: Moments | None = None
    for part in parts:
        total = part if total is None else total.merge(part)
    if total is None:
        raise ConfigError("no frames to compute statistics from (no demos selected?)")
    return total


# ---------------------------------------------------------------------------- robomimic rules
def obs_normalization_stats(moments: Mapping[str, Moments]) -> dict[str, dict[str, np.ndarray]]:
    """robomimic's observation stats: {key: {"mean": [1, ...], "std": [1, ...]}} as float32."""
    out = {}
    for key, m in moments.items():
        mean = m.mean.astype(np.float32)[None]
        std = (m.std.astype(np.float32) + np.float32(OBS_STD_TOLERANCE))[None]
        out[key] = {"mean": mean, "std": std}
    return out


def check_action_config(action_keys, action_config: Mapping | None) -> dict[str, str | None]:
    """Normalisation method per action key (keys absent from the config are not normalised)."""
    methods = {}
    config = action_config or {}
    for key in action_keys:
        entry = config.get(key) or {}
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"action_config[{key!r}] must be a dict like {{'normalization': 'min_max'}}"
            )
        method = entry.get("normalization")
        if method not in NORMALIZATIONS:
            raise ConfigError(
                f"action_config[{key!r}]['normalization'] is {method!r}; choose None, 'min_max' or 'gaussian'"
            )
        methods[key] = method
    return methods


def action_normalization_stats(
    moments: Mapping[str, Moments], methods: Mapping[str, str | None]
) -> dict[str, dict[str, np.ndarray]]:
    """robomimic's action normalisation: {key: {"scale": [1, D], "offset": [1, D]}} float32."""
    out = {}
    for key, m in moments.items():
        method = methods.get(key)
        mean = m.mean.astype(np.float32)[None]
        if method is None:
            out[key] = {"scale": np.ones_like(mean), "offset": np.zeros_like(mean)}
        elif method == "min_max":
            lo = m.min.astype(np.float32)[None]
            hi = m.max.astype(np.float32)[None]
            out_lo, out_hi = MIN_MAX_OUTPUT
            span = hi - lo
            flat = span < MIN_MAX_RANGE_EPS
            span[flat] = out_hi - out_lo
            scale = span / (out_hi - out_lo)
            offset = lo - scale * out_lo
            offset[flat] = lo[flat] - (out_hi + out_lo) / 2
            out[key] = {"scale": scale, "offset": offset}
        elif method == "gaussian":
            std = m.std.astype(np.float32)[None]
            std[std < GAUSSIAN_STD_EPS] = 1.0
            out[key] = {"scale": std, "offset": mean}
        else:  # pragma: no cover - check_action_config refuses it first
            raise ConfigError(f"unknown action normalization {method!r}")
    return out


# ---------------------------------------------------------------------------- the cache
def _cache_home() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "demoset", "stats")


def cache_paths(dataset_path: str) -> list[str]:
    """Where the stats cache of a dataset may live: beside it first, then the user cache."""
    path = os.path.abspath(dataset_path)
    beside = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.demoset-stats.json")
    digest = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:24]
    return [beside, os.path.join(_cache_home(), f"{digest}.json")]


def cache_key(dataset_path: str, array_key: str, demos: list[str], lengths: np.ndarray) -> str:
    st = os.stat(dataset_path)
    payload = {
        "version": CACHE_VERSION,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "key": array_key,
        "demos": hashlib.sha256("\n".join(demos).encode()).hexdigest(),
        "lengths": hashlib.sha256(np.asarray(lengths, dtype=np.int64).tobytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: str, entries: dict) -> bool:
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".demoset-stats.", suffix=".tmp", dir=directory)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


class StatsCache:
    """Moments of array keys of one dataset, read from and written to its cache file."""

    def __init__(self, dataset_path: str, enabled: bool = True):
        self.dataset_path = dataset_path
        self.enabled = enabled

    def get(
        self,
        array_key: str,
        demos: list[str],
        lengths: np.ndarray,
        compute: Callable[[], Moments],
    ) -> Moments:
        if not self.enabled:
            return compute()
        key = cache_key(self.dataset_path, array_key, demos, lengths)
        for path in cache_paths(self.dataset_path):
            entry = _read_cache(path).get(key)
            if entry is not None:
                try:
                    return Moments.from_json(entry)
                except (KeyError, TypeError, ValueError):
                    break
        moments = compute()
        for path in cache_paths(self.dataset_path):
            entries = _read_cache(path)
            entries.pop(key, None)
            entries[key] = moments.to_json()
            while len(entries) > MAX_CACHE_ENTRIES:
                entries.pop(next(iter(entries)))
            if _write_cache(path, entries):
                break
        return moments
