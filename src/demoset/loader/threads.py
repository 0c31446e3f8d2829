"""The loader's helper threads: how many a batch may use, and the pool they live in.

Two jobs of a batch are bound by one core's speed and release the GIL: decoding
compressed chunks (`chunks.py`, `ram_chunks.py`), and copying each cached image key's
windows out of RAM (`SequenceDataset._gather` runs the image keys side by side: about
+25 % samples/s with two cameras in cache "all" here). Splitting one copy in halves
gained nothing: one core already moves about 14 GB/s, and a 0.25 ms copy is too short to
hand out. Inside DataLoader workers the workers already use the CPUs, so there a batch
uses one thread.
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
