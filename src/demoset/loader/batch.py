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

    out = {}
    for key, value in tree.items():
        if type(value) is dict:
            out[key] = to_torch(value, shared)
        elif type(value) is np.ndarray:
            entry = shared.get(id(value)) if shared else None
            if entry is not None and entry[0] is value:
                owner = entry[1]
                dtype = torch.from_numpy(np.empty(0, dtype=value.dtype)).dtype
                out[key] = owner[: value.nbytes].view(dtype).view(value.shape)
            else:
                out[key] = torch.from_numpy(value)
        else:
            out[key] = torch.as_tensor(value)
    return out


def collate(batch):
    """DataLoader `collate_fn`: tensors from a `SampleBatch` without copying; else default collate."""
    if isinstance(batch, SampleBatch):
        return to_torch(batch.data, batch.shared)
    from torch.utils.data import default_collate

    return default_collate(batch)
