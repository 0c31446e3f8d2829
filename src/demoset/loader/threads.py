"""The loader's helper threads: how many a batch may use, and the pool they live in.

Decoding compressed chunks (`chunks.py`, `ram_chunks.py`) is bound by one core's speed
and releases the GIL, so a batch's chunks are decoded on several threads. Inside
DataLoader workers the workers already use the CPUs, so there a batch uses one thread.
(Copying frames out of the RAM cache gained nothing from threads: one core already moves
about 14 GB/s here, and handing halves of a 0.25 ms copy to threads cost more.)
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def batch_threads() -> int:
    """Threads one batch may use: the CPUs this process may run on (at most 4), or 1
    inside a DataLoader worker. DEMOSET_THREADS overrides (1 turns the threads off)."""
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
        pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="demoset-batch")
    return pool
