"""Reusing the memory of batches the caller has dropped.

An image batch is megabytes (16 windows of 10 steps, two 84x84 cameras, obs and next_obs:
12.9 MB). Allocating it afresh for every batch costs more than filling it: glibc hands
blocks that big to the kernel and back (mmap, or a heap trimmed when a batch is freed),
and the kernel zero-fills every 4 KB page again on first touch - about 1,600 page faults
per batch, measured here, which made the batch fetch 3x slower than the copy itself.

`BufferPool` keeps a few blocks and hands out views of one that no earlier batch still
uses. A view of a numpy array keeps its owner alive (numpy points every view, and every
torch tensor made with `torch.from_numpy`, at the array that owns the memory), so a block
whose reference count is back to what it was when the pool made it is unused.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

MIN_POOLED_BYTES = 1 << 20
"""Arrays smaller than this come from np.empty. glibc serves them from its heap once one has
been freed, so they rarely fault, and the pool's own bookkeeping (a few us) would cost more:
a low-dim batch of 100 windows (a 336 KB block) was 4-6 % faster through the DataLoader
without it."""


class BufferPool:
    """Blocks of memory reused for batch arrays once no array from them is alive.

    max_blocks bounds the blocks kept; when every kept block is in use (the caller holds
    many batches at once), new arrays are plain allocations that are not kept.
    """

    def __init__(self, max_blocks: int = 32):
        self.max_blocks = int(max_blocks)
        self._blocks: list[np.ndarray] = []
        self._idle_refs: list[int] = []
        self._lock = threading.Lock()

    def _refs(self, i: int) -> int:
        return sys.getrefcount(self._blocks[i])

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised array, in a reused block when one is free."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_POOLED_BYTES:
            return np.empty(shape, dtype=dtype)
        blocks, idle = self._blocks, self._idle_refs
        with self._lock:
            best = -1
            for i in range(len(blocks)):
                block = blocks[i]
                size = block.nbytes
                # idle: no reference beyond those counted at its making, and `block` here
                if nbytes <= size <= 2 * nbytes and sys.getrefcount(block) - 1 == idle[i]:
                    if size == nbytes:  # the usual case: a block made for this shape
                        best = i
                        break
                    if best < 0 or size < blocks[best].nbytes:
                        best = i
            if best < 0:
                if len(blocks) >= self.max_blocks and not self._drop_one_idle():
                    return np.empty(shape, dtype=dtype)
                blocks.append(np.empty(nbytes, dtype=np.uint8))
                idle.append(self._refs(len(blocks) - 1))
                best = len(blocks) - 1
            return blocks[best][:nbytes].view(dtype).reshape(shape)

    def _drop_one_idle(self) -> bool:
        for i in range(len(self._blocks)):
            if self._refs(i) == self._idle_refs[i]:
                del self._blocks[i], self._idle_refs[i]
                return True
        return False

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool's blocks (in use or not)."""
        return sum(b.nbytes for b in self._blocks)


batch_buffers = BufferPool()
"""The process's pool for batch arrays built in the main process (not in workers)."""
