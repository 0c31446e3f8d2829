"""The loader's helper threads: how many a batch may use, and the pool they live in.

Two jobs of a batch are bound by one core's speed and release the GIL: reading an image
key's windows from the page cache (`preadv`) and decoding compressed chunks (`chunks.py`,
`ram_chunks.py`). So `SequenceDataset._gather` runs those image keys side by side, one
per thread, and chunks are decoded on the threads. Measured with two 84x84 cameras, batch
16, 12 paired rounds in one process: cache "low_dim" +24-34 %, None +29 % on a quiet
machine. Inside DataLoader workers the workers already use the CPUs, so there a batch uses
one thread.

The third, copying a cached image key's windows out of RAM, is split instead: each key's
copy is one `torch.index_select` over torch's intra-op threads (`parallel_take`), the keys
one after another. torch's threads wait spinning between copies, so a copy of 0.3-0.7 ms
is worth handing out to them, which it was not to this module's pool: one camera's batch
copied 1.5-1.9x faster on two threads than on one, and cache "all" read 1.06-1.13x faster
(median of paired rounds, six runs) than with the cameras side by side on the pool, where
two threads' wake-ups cost more than half a copy (numpy's take in halves on the pool:
0.93x).
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

THREAD_PREFIX = "demoset-batch"
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def batch_threads() -> int:
    """Threads one batch may use: the CPUs this process may run on (at most 4), or 1
    inside a DataLoader worker or on one of these threads. DEMOSET_THREADS overrides
    (1 turns the threads off)."""
    if threading.current_thread().name.startswith(THREAD_PREFIX):
        return 1  # already on one of them: a nested wait could leave no thread to run
    chosen = os.environ.get("DEMOSET_THREADS")
    if chosen:
        return max(int(chosen), 1)
    torch_data = sys.modules.get("torch.utils.data")
    if torch_data is not None and torch_data.get_worker_info() is not None:
        return 1
    return max(min(len(os.sched_getaffinity(0)), 4), 1)


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of `threads` threads (a forked child makes its own)."""
    key = (os.getpid(), threads)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix=THREAD_PREFIX)
    return pool


PARALLEL_COPY_BYTES = 1 << 20
"""Copies from RAM this big or bigger (an image key's batch) go to torch's threads."""


def parallel_take(data: np.ndarray, rows: np.ndarray, out: np.ndarray) -> bool:
    """out[i] = data[rows[i]] on torch's intra-op threads (all of the process's CPUs; one
    inside DataLoader workers, where torch sets one). Returns False, having done nothing,
    where numpy's take should do it: small copies, arrays not C-contiguous."""
    if out.nbytes < PARALLEL_COPY_BYTES or not (data.flags.c_contiguous and out.flags.c_contiguous):
        return False
    import torch

    # frames as rows of bytes: torch has no tensor type for some of numpy's dtypes
    source = torch.from_numpy(data.reshape(len(data), -1).view(np.uint8))
    target = torch.from_numpy(out.reshape(len(rows), -1).view(np.uint8))
    torch.index_select(source, 0, torch.from_numpy(rows.astype(np.int64, copy=False)), out=target)
    return True
