"""Choosing what to look at: seeded demo samples, spaced frame indices, partial reads.

Plots and reports must work on datasets far bigger than memory (10 GB of camera frames),
so they never read a whole image array: they pick a few demos with a seeded generator and
a few frames per demo, and read just those rows with h5py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from demoset.errors import LayoutError
from demoset.format import DemoFile, sorted_demos


def sample_demos(demos: Sequence[str], n: int | None, seed: int = 0) -> list[str]:
    """Up to `n` demos chosen at random with `seed`, returned in numeric order.

    `n=None` (or `n >= len(demos)`) returns every demo. The same seed always picks the same
    demos, so two reports of one file show the same episodes.
    """
    demos = list(demos)
    if n is None or n >= len(demos):
        return sorted_demos(demos)
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(demos), size=n, replace=False)
    return sorted_demos(demos[i] for i in picked)


def spaced_indices(length: int, n: int) -> np.ndarray:
    """Up to `n` sorted, distinct step indices spread evenly over `range(length)`.

    The first and last steps are always included (when `n >= 2`); a demo no longer than
    `n` gives every index.
    """
    if length <= 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    if length <= n:
        return np.arange(length, dtype=np.int64)
    if n == 1:
        return np.array([length // 2], dtype=np.int64)
    return np.unique(np.round(np.linspace(0, length - 1, n)).astype(np.int64))


def read_rows(df: DemoFile, demo: str, key: str, indices: np.ndarray) -> np.ndarray:
    """Rows `indices` (sorted, distinct) of `data/<demo>/<key>`, reading only those rows.

    A contiguous run is read as one slice; otherwise each row is read on its own, which for
    per-frame chunked images touches exactly the chunks needed.
    """
    indices = np.asarray(indices, dtype=np.int64)
    dset = df.dataset(demo, key)
    if indices.size == 0:
        return np.zeros((0, *dset.shape[1:]), dtype=dset.dtype)
    first, last = int(indices[0]), int(indices[-1])
    try:
        if last - first + 1 == indices.size:
            return dset[first : last + 1]
        out = np.empty((indices.size, *dset.shape[1:]), dtype=dset.dtype)
        for i, row in enumerate(indices.tolist()):
            out[i] = dset[row]
        return out
    except (OSError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LayoutError(f"cannot read array ({first_line})", df.path, dset.name) from None


def demos_within_rows(
    demos: Sequence[str], lengths: np.ndarray, max_rows: int, seed: int = 0
) -> list[str]:
    """All demos when their steps fit in `max_rows`, else a seeded sample that does (about).

    Bounds what whole-array reads of small per-step arrays (actions) can cost on a file
    with millions of steps.
    """
    lengths = np.asarray(lengths)
    if int(lengths.sum()) <= max_rows:
        return list(demos)
    mean = max(1.0, float(lengths.mean()))
    return sample_demos(demos, max(1, int(max_rows / mean)), seed)
