"""Batches: what `__getitems__` returns and the collate function that makes it free.

`SequenceDataset.__getitems__(indices)` gathers the whole batch at once (one numpy gather
per key) and returns a `SampleBatch`: a read-only sequence of per-sample dicts (so torch's
default collate works with it unchanged, stacking them again), which also carries the
already-collated batch in `.data`. `collate` (pass `collate_fn=demoset.loader.collate` to a
DataLoader) turns `.data` into tensors without copying: that is the fast path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def tree_map(fn, tree):
    """Apply `fn` to every leaf of nested dicts."""
    if isinstance(tree, Mapping):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def sample_of(batch: Mapping[str, Any], i: int) -> dict:
    """Sample `i` of a collated batch, as a dict of views (index as a Python int)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, Mapping):
            out[key] = sample_of(value, i)
        elif key == "index":
            out[key] = int(value[i])
        else:
            out[key] = value[i]
    return out


class SampleBatch(Sequence):
    """A batch of samples: `len(b)` samples, `b[i]` one sample dict, `b.data` the collated dict.

    `shared` maps id(array) -> (array, owner tensor) for arrays of `data` built in shared
    memory (inside DataLoader workers), which `collate` hands on as those tensors.
    """

    __slots__ = ("data", "_size", "shared")

    def __init__(self, data: dict, size: int, shared: dict | None = None):
        self.data = data
        self._size = int(size)
        self.shared = shared

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._size))]
        if i < 0:
            i += self._size
        if not 0 <= i < self._size:
            raise IndexError(i)
        return sample_of(self.data, i)

    def __repr__(self) -> str:
        return f"SampleBatch({self._size} samples)"


def to_torch(tree, shared: dict | None = None):
    """numpy arrays of a (nested) batch dict to torch tensors, sharing memory.

    Arrays listed in `shared` become views of their shared-memory owner tensor, so that
    sending them to another process passes a handle instead of copying.
    """
    import torch

    return _tensors(tree, shared, torch)


def _tensors(tree: dict, shared: dict | None, torch) -> dict:
    out = {}
    for key, value in tree.items():
        kind = type(value)
        if kind is np.ndarray:
            tensor = _shared_tensor(value, shared) if shared else None
            out[key] = torch.from_numpy(value) if tensor is None else tensor
        elif kind is dict:
            out[key] = _tensors(value, shared, torch)
        else:
            out[key] = torch.as_tensor(value)
    return out


def _shared_tensor(value: np.ndarray, shared: dict):
    """`value` as a view of a shared-memory owner tensor, if it is a registered array or a
    view into one (two batch arrays may share one block: obs and next_obs, see
    `shifted.py`); else None."""

    entry = shared.get(id(value))
    if entry is None or entry[0] is not value:
        start = value.__array_interface__["data"][0]
        entry = next(
            (
                (array, owner)
                for array, owner in shared.values()
                if 0 <= start - array.__array_interface__["data"][0] < array.nbytes
            ),
            None,
        )
        if entry is None:
            return None
    base, owner = entry
    itemsize = value.dtype.itemsize
    offset = value.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    if offset % itemsize or any(s % itemsize or s < 0 for s in value.strides):
        return None
    dtype = torch_dtype(value.dtype)
    flat = owner[: base.nbytes - base.nbytes % itemsize].view(dtype)
    return flat.as_strided(value.shape, [s // itemsize for s in value.strides], offset // itemsize)


def torch_dtype(dtype: np.dtype):
    """The torch dtype of a numpy dtype (as `torch.from_numpy` maps it)."""
    import torch

    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def collate(batch):
    """DataLoader `collate_fn`: tensors from a `SampleBatch` without copying; else default collate."""
    if isinstance(batch, SampleBatch):
        return to_torch(batch.data, batch.shared)
    from torch.utils.data import default_collate

    return default_collate(batch)
