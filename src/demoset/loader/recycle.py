"""Batch arrays in memory that is used again once nothing refers to it any more.

A batch's big arrays (an image window block is megabytes) are handed to the caller, and
through `torch.from_numpy` to the training loop, so the loader cannot know when they are
done with. Left to the C allocator, each one is new memory: glibc maps blocks this big
with mmap, or grows its heap and gives the top back at the next free, and either way the
kernel faults every 4 KB page in again on first write. Measured on the image file of
`benchmarks/compression.py` (cache "low_dim", batch 16): the same reads ran at 1.8k
samples/s in fresh memory and 8.5k samples/s when glibc kept its heap (the difference
is page faults inside `preadv` and `take`).

So the main process takes batch arrays from a `BlockPool`: an array's memory is a block
that returns to the pool when the last array, view or tensor using it is freed (a
`_Lease` is the arrays' base object; CPython frees it, and returns the block, the moment
its last user goes). A block is only ever used again after that, so no batch sees another
batch's data change. The pool keeps at most `max_free_bytes` of idle blocks and
`per_size` blocks of one size; anything beyond is freed as usual.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict

import numpy as np

BLOCK_ALIGN = 1 << 16
"""Block sizes are rounded up to this, so the last, smaller batch of an epoch and rows of
slightly different sizes reuse one another's blocks."""


class _Block:
    """A block of memory and its address (looked up once: numpy's is slow to ask)."""

    __slots__ = ("memory", "address", "size")

    def __init__(self, size: int):
        self.memory = np.empty(size, dtype=np.uint8)
        self.address = self.memory.ctypes.data
        self.size = size


class _Lease:
    """The base object of arrays built in a pooled block: returns the block when freed."""

    __slots__ = ("__array_interface__", "_block", "_pool")

    def __init__(self, block: _Block, pool: BlockPool, shape: tuple[int, ...], typestr: str):
        self._block = block
        self._pool = pool
        self.__array_interface__ = {
            "data": (block.address, False),
            "shape": shape,
            "typestr": typestr,
            "version": 3,
        }

    def __del__(self):
        self._pool._give_back(self._block)


class BlockPool:
    """Blocks of memory for batch arrays, each used again once its arrays are gone."""

    def __init__(self, max_free_bytes: int = 512 << 20, per_size: int = 8):
        self.max_free_bytes = int(max_free_bytes)
        self.per_size = int(per_size)
        self._free: dict[int, list[_Block]] = defaultdict(list)
        self._free_bytes = 0
        self._lock = threading.Lock()

    @property
    def free_bytes(self) -> int:
        """Bytes of idle blocks kept for reuse."""
        return self._free_bytes

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of `shape` and `dtype` in a pooled block."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        size = -(-max(nbytes, 1) // BLOCK_ALIGN) * BLOCK_ALIGN
        with self._lock:
            idle = self._free.get(size)
            block = idle.pop() if idle else None
            if block is not None:
                self._free_bytes -= size
        if block is None:
            block = _Block(size)
        return np.asarray(_Lease(block, self, shape, dtype.str))

    def _give_back(self, block: _Block) -> None:
        size = block.size
        with self._lock:
            idle = self._free[size]
            if len(idle) < self.per_size and self._free_bytes + size <= self.max_free_bytes:
                idle.append(block)
                self._free_bytes += size

    def clear(self) -> None:
        """Free every idle block."""
        with self._lock:
            self._free.clear()
            self._free_bytes = 0


POOL = BlockPool()
"""The process's pool for batch arrays built outside DataLoader workers."""
