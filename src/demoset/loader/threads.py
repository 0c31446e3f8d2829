"""The loader's helper threads: how many a batch may use, and the pool they live in.

Three jobs of a batch are bound by one core's speed and release the GIL: copying a cached
image key's windows out of RAM, reading an image key's windows from the page cache
(`preadv`), and decoding compressed chunks (`chunks.py`, `ram_chunks.py`). So
`SequenceDataset._gather` runs the image keys side by side, one per thread, and chunks are
decoded on the threads. Measured with two 84x84 cameras, batch 16, 12 paired rounds in
one process: cache "all" +13-30 %, "low_dim" +24-34 %, None +29 % on a quiet machine;
with the other core busy (a test run beside it) "all" lost 3-7 %. Splitting one copy in
halves gained nothing (one core already moves about 14 GB/s, and a 0.25 ms copy is too
short to hand out). Inside DataLoader workers the workers already use the CPUs, so there a
batch uses one thread.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

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
