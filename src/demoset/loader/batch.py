"""Batches: what `__getitems__` returns and the collate function that makes it free.

`SequenceDataset.__getitems__(indices)` gathers the whole batch at once (one numpy gather
per key) and returns a `SampleBatch`: a read-only sequence of per-sample dicts (`Sample`,
a plain dict subclass), which also carries the already-collated batch in `.data`.

Both ways a DataLoader collates are fast:

- torch's default collate (no `collate_fn`, as robomimic's train.py builds its loader)
  looks at the batch's first element and dispatches on its type through
  `torch.utils.data._utils.collate.default_collate_fn_map`, the extension point torch
  documents for this. `Sample` is registered there (`register_default_collate`): when the
  batch it came from is a whole `SampleBatch`, the result is `.data` as tensors, without
  stacking the samples again; any other list of samples (a user's collate_fn passing a
  slice or its own list on) is collated key by key exactly as torch collates dicts.
- `collate` (`collate_fn=demoset.loader.collate`) does the same directly.

A user's own collate_fn still gets the `SampleBatch`: `len()`, indexing and iteration give
per-sample dicts, `.data` the collated numpy batch.
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


class Sample(dict):
    """One sample of a `SampleBatch`: a plain dict of numpy views (nested groups are
    plain dicts). Its own type only so that torch's default collate can recognise a
    batch of them (see the module docstring)."""

    __slots__ = ()


def sample_of(batch: Mapping[str, Any], i: int, top: type = dict) -> dict:
    """Sample `i` of a collated batch, as a dict of views (index as a Python int).

    Batches are plain dicts of arrays: `type(...) is dict` costs a tenth of an
    isinstance check against Mapping, and torch's default collate asks every batch for
    its first sample (half the time that adds went to those checks)."""
    out = top()
    for key, value in batch.items():
        if type(value) is dict:
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
        return sample_of(self.data, i, Sample)

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


def _collate_samples(batch, *, collate_fn_map=None):
    """torch's default collate of a batch whose first element is a `Sample`.

    A whole `SampleBatch` becomes its gathered arrays as tensors (no copy); any other
    sequence of samples is collated key by key, as torch collates dicts.
    """
    if isinstance(batch, SampleBatch):
        return to_torch(batch.data, batch.shared)
    from torch.utils.data._utils.collate import collate as torch_collate

    first = batch[0]
    return {
        key: torch_collate([sample[key] for sample in batch], collate_fn_map=collate_fn_map)
        for key in first
    }


def register_default_collate() -> None:
    """Teach torch's default collate the fast path for `SampleBatch` (idempotent).

    Registers `Sample` in torch's `default_collate_fn_map` (the documented way to extend
    `default_collate`); done on import of `demoset.loader.sequence`, so spawned DataLoader
    workers, which import it to unpickle the dataset, have it too.
    """
    from torch.utils.data._utils.collate import default_collate_fn_map

    default_collate_fn_map.setdefault(Sample, _collate_samples)
