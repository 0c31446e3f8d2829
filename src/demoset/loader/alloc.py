"""Memory: the shared arrays that hold cached data, the arrays a batch is built in, and
giving memory freed while loading back to the OS.

A DataLoader worker sends its batch to the main process through shared memory: an array
that already lives there goes by handle instead of being copied, and the worker keeps no
heap copy of it. So inside workers a batch's big arrays are made in shared memory and
registered (`BatchPlan.shared`: id(array) -> (array, owner tensor)), which `batch.collate`
turns into views of their owner tensors. Measured side by side with 2 workers (one
process, alternating turns): without it images "all" ran at 0.71x [0.43-0.96] and low-dim
at 0.24x [0.14-0.49] of the samples/s, and each worker held 27 MB more private memory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from demoset.loader.index import Windows
from demoset.loader.recycle import POOL

SHARED_OUTPUT_MIN_BYTES = 1 << 16
"""Batch arrays at least this big are built in shared memory inside DataLoader workers."""
POOLED_MIN_BYTES = 1 << 20
"""Batch arrays at least this big come from the recycling pool in the main process:
smaller ones fault in few pages, and a pooled block costs a few microseconds (low-dim
batches of 100 windows, about 115 microseconds each, ran 20 % slower with 64 KB)."""


def shared_array(shape: tuple[int, ...], dtype) -> tuple[object, np.ndarray]:
    """A zero-copy numpy view of a new torch shared-memory storage: (owner tensor, array)."""
    import torch

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = max(nbytes, 1)
    try:
        storage = torch.UntypedStorage._new_shared(size)
        owner = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (size,), (1,))
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        owner = torch.empty(size, dtype=torch.uint8).share_memory_()
    array = owner.numpy()[:nbytes].view(dtype).reshape(shape)
    return owner, array


def batch_array(shape: tuple[int, ...], dtype, shared: dict | None) -> np.ndarray:
    """An uninitialised batch array. Inside a DataLoader worker (`shared` a registry) big
    ones are in shared memory and registered in `shared`; in the main process the
    biggest come from the recycling pool; the rest are plain np.empty."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if shared is None and nbytes >= POOLED_MIN_BYTES:  # memory used again (recycle.py)
        return POOL.empty(tuple(shape), dtype)
    if shared is None or nbytes < SHARED_OUTPUT_MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    owner, array = shared_array(tuple(shape), dtype)
    shared[id(array)] = (array, owner)
    return array


@dataclass(slots=True)
class BatchPlan:
    """One batch as the arrays see it: which frames (`win`) and where its arrays go.

    Made once per batch by `SequenceDataset` and passed to every array's gather, instead of
    process- or thread-wide switches: the same array object serves the main process
    (shared None: plain arrays) and workers (shared: a registry, see the module docstring).
    """

    win: Windows
    shared: dict | None = None

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised array for this batch (see `batch_array`)."""
        return batch_array(shape, dtype, self.shared)


def _loaded_library(name: str) -> str | None:
    """Path of a shared library this process has loaded (from /proc/self/maps), if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith(name + "-") or os.path.basename(
                    path
                ).startswith(name + ".so"):
                    return path
    except OSError:
        pass
    return None


def release_free_heap() -> None:
    """Give memory freed while loading back to the OS (best effort, Linux only).

    Loading touches thousands of HDF5 objects. Once closed, HDF5 keeps their memory in
    its free lists and glibc keeps freed pages in the heap, so the process would stay
    several MB (about 6 MB per 200 demos) above its live data. A garbage collection first
    frees handles held in reference cycles. H5garbage_collect() empties
    the free lists (under h5py's lock, as every HDF5 call) and malloc_trim() returns the
    pages.
    """
    import ctypes
    import gc

    gc.collect()  # closed HDF5 handles caught in reference cycles go first
    path = _loaded_library("libhdf5")
    if path is not None:
        try:
            from h5py._objects import phil

            with phil:
                ctypes.CDLL(path).H5garbage_collect()
        except (OSError, AttributeError, ImportError):
            pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
