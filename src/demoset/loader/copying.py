"""Splitting a batch's big copies over threads.

One core cannot move memory as fast as the machine can: gathering an image batch (16
windows of 10 steps, two 84x84 cameras, obs and next_obs: 12.9 MB) runs at about 7 GB/s
with one thread and about 11 GB/s with two on the 2-core machines this project is
measured on (`benchmarks/loader.py` prints both).

Two ways, by where the rows come from:

- Rows in RAM (`torch_take`): one `torch.index_select`, which torch splits over its
  intra-op threads (`torch.set_num_threads`) inside one call, with the GIL let go
  throughout. Measured against the helper threads below on the same gathers, in one
  process: 5-7 % more image samples/s through the DataLoader (copy_threads=2, median of
  16 alternating rounds, two runs), since no Python runs between the parts.
- Reads from the file (`split_rows`): `os.preadv` and numpy's `take` let go of the GIL
  while they copy, so plain threads share the work; the calling thread does one part
  itself. Copies are cut into parts of at least `MIN_PART_BYTES`, since handing a part to
  another thread costs microseconds; smaller copies stay in one thread.

`copy_threads(n)` says whether the copies inside the block may use more than one thread
(the loader asks the `Tuner` for 1 or n by measured speed), and how many helper threads.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

MIN_PART_BYTES = 1 << 19
"""A copy is split only into parts of at least this many bytes."""

MAX_AUTO_THREADS = 4
"""Most threads chosen automatically (more rarely helps a memory copy)."""

T = TypeVar("T")

_setting = threading.local()

TORCH_GATHER_DTYPES = frozenset(
    np.dtype(t)
    for t in ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool")
)
"""dtypes (native byte order) `torch_take` hands to torch; others are copied with numpy."""

_forked = False
"""True in a process forked after this module was imported (see `torch_take`)."""

_cpus: int | None = None  # CPUs this process may run on, once looked up


def available_cpus() -> int:
    """CPUs this process may run on (looked up once per process)."""
    global _cpus
    if _cpus is None:
        try:
            _cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            _cpus = os.cpu_count() or 1
    return _cpus


def auto_copy_threads() -> int:
    """The default: the CPUs available (at most 4), but 1 inside a DataLoader worker.

    DataLoader workers already run side by side, one per core, so threads in each would
    only compete with each other.
    """
    import torch.utils.data

    if torch.utils.data.get_worker_info() is not None:
        return 1
    return max(1, min(available_cpus(), MAX_AUTO_THREADS))


@contextmanager
def copy_threads(threads: int):
    """Within this block, `split_rows` may use up to `threads` threads (the caller's included)."""
    saved = getattr(_setting, "threads", 1)
    _setting.threads = max(1, int(threads))
    try:
        yield
    finally:
        _setting.threads = saved


class Tuner:
    """Picks 1 or n copy threads by the speed whole batches have lately reached with each.

    Threads pay only when another core is free: on a busy machine, or a virtual machine
    whose host takes a virtual CPU away, two threads were measured 30 % slower than one.
    Part of that cost falls outside the copies themselves (a helper that has to get the
    GIL back to go idle makes the caller wait), so the caller times whole batches. The
    tuner tries both, keeps a moving average of bytes per second for each, uses the
    faster, and tries the other again every `EXPLORE_EVERY` batches (4x as seldom when it
    was more than `FAR_APART` slower) so that it follows the machine as load comes and goes.
    """

    EXPLORE_EVERY = 16
    FAR_APART = 1.25  # a speed ratio beyond which the slower option is tried 4x less often
    WEIGHT = 0.25  # of the newest batch in the moving average

    def __init__(self) -> None:
        self.speed: dict[int, float] = {}
        self.batches = 0
        self._lock = threading.Lock()

    def choose(self, threads: int) -> int:
        if threads <= 1:
            return 1
        with self._lock:
            self.batches += 1
            for option in (threads, 1):
                if option not in self.speed:
                    return option
            best, other = sorted((threads, 1), key=lambda o: -self.speed[o])
            every = self.EXPLORE_EVERY
            if self.speed[best] > self.FAR_APART * self.speed[other]:
                every *= 4  # clearly slower: look again less often
            return other if self.batches % every == 0 else best

    def record(self, threads: int, nbytes: int, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            speed = nbytes / seconds
            old = self.speed.get(threads)
            self.speed[threads] = speed if old is None else old + self.WEIGHT * (speed - old)


tuner = Tuner()
"""The process's tuner (load on the machine is the same for every dataset in it)."""


class _Pool:
    """The process's helper threads, made on first use (and again in a forked child)."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._workers = 0
        self._lock = threading.Lock()

    def executor(self, workers: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._workers < workers:
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
                self._executor = ThreadPoolExecutor(workers, thread_name_prefix="demoset-copy")
                self._workers = workers
            return self._executor


_pool = _Pool()


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads, and may run on other CPUs."""
    global _forked, _cpus, _pool
    _forked = True
    _cpus = None
    _pool = _Pool()  # the parent's helpers (and maybe its held lock) are not here


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Job:
    __slots__ = ("bounds", "copy", "after")

    def __init__(self, bounds: list[int], copy: Callable[[int, int], object], after):
        self.bounds = bounds
        self.copy = copy
        self.after = after


def _cut(rows: int, nbytes: int) -> list[int]:
    parts = max(1, min(rows, nbytes // MIN_PART_BYTES))
    return [rows * i // parts for i in range(parts + 1)]


def torch_take(
    source: np.ndarray,
    rows: np.ndarray,
    out: np.ndarray,
    rows_of: Callable[[], object] | None = None,
) -> bool:
    """`out[k] = source[rows[k]]` on torch's intra-op threads, when the block allows more
    than one thread, the copy is worth splitting and torch gathers the dtype; returns
    whether it took the copy (False: nothing was done, copy another way). `rows_of`, if
    given, returns `source` as a 2-D tensor of its rows (the caller's kept view: making
    one per gather and freeing it cost a few us each).

    Inside `deferred_copies()` the copy waits for the block's end, where the block's
    gathers run back to back: in one process, alternating, a batch whose four image
    gathers ran in one burst was 4-8 % faster than one with Python work between them
    (which then runs on caches the copies have just flushed).

    Never in a process forked after this module was imported: torch's CPU threads are
    GNU OpenMP's, whose thread pool does not survive a fork, and a forked child that
    starts a parallel region after its parent ran one hangs (seen here with
    `index_select` itself). DataLoader workers are such children; torch gives them one
    thread anyway.
    """
    if getattr(_setting, "threads", 1) <= 1 or _forked or out.nbytes < 2 * MIN_PART_BYTES:
        return False
    if not (source.flags.c_contiguous and out.flags.c_contiguous) or source.dtype != out.dtype:
        return False
    if out.dtype not in TORCH_GATHER_DTYPES:
        return False
    import torch

    if torch.get_num_threads() <= 1:
        return False
    width = out.nbytes // out.itemsize // max(len(rows), 1)
    deferred = getattr(_setting, "deferred", None)
    index = deferred.index(rows) if deferred is not None else _index_tensor(rows)
    gather = (
        rows_of() if rows_of is not None else torch.from_numpy(source.reshape(len(source), width)),
        index,
        torch.from_numpy(out.reshape(len(rows), width)),
    )
    if deferred is not None:
        deferred.gathers.append(gather)
    else:
        _torch_gather([gather])
    return True


def _index_tensor(rows: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))


def _torch_gather(gathers: list[tuple]) -> None:
    import torch

    for source, index, out in gathers:
        torch.index_select(source, 0, index, out=out)


def _run_parts(parts: list[tuple[_Job, int]], threads: int) -> list:
    """Run every (job, part) once, by the calling thread and up to threads - 1 helpers
    taking one part at a time; returns the parts' results in order. Every part has
    finished before this returns or raises (the first error is raised)."""
    results: list = [None] * len(parts)
    errors: list[BaseException] = []
    claim = itertools.count()
    lock = threading.Lock()

    def work() -> None:
        while not errors:
            with lock:
                i = next(claim)
            if i >= len(parts):
                return
            job, k = parts[i]
            try:
                results[i] = job.copy(job.bounds[k], job.bounds[k + 1])
            except BaseException as exc:
                errors.append(exc)

    helpers = min(threads, len(parts)) - 1
    futures = []
    if helpers > 0:
        executor = _pool.executor(helpers)
        futures = [executor.submit(work) for _ in range(helpers)]
    work()
    for future in futures:  # the other parts still write into the batch: wait for them
        future.result()
    if errors:
        raise errors[0]
    return results


def split_rows(
    rows: int,
    nbytes: int,
    copy: Callable[[int, int], T],
    after: Callable[[list[T]], None] | None = None,
) -> None:
    """Run `copy(start, stop)` over row ranges covering [0, rows), then `after(results)`.

    Inside `deferred_copies()` the work waits for the block's end, where the copies of
    every array of the batch run together (one hand-over to the helper threads per batch,
    not per array); otherwise it runs now. Copies are cut into parts of about
    `MIN_PART_BYTES` that the calling thread and the helpers take one at a time until
    none is left, so a helper the OS does not run (a busy machine, a virtual CPU the host
    took) holds back at most the one part it took.
    """
    job = _Job(_cut(rows, nbytes) if rows else [0, 0], copy, after)
    deferred = getattr(_setting, "deferred", None)
    if deferred is not None:
        deferred.jobs.append(job)
    else:
        _finish([job])


def _finish(jobs: list[_Job]) -> None:
    threads = getattr(_setting, "threads", 1)
    parts = [(job, k) for job in jobs for k in range(len(job.bounds) - 1)]
    if threads <= 1 or len(parts) <= 1:  # one thread: each job in one piece
        results = [[job.copy(job.bounds[0], job.bounds[-1])] for job in jobs]
    else:
        flat = _run_parts(parts, threads)
        results, at = [], 0
        for job in jobs:
            results.append(flat[at : at + len(job.bounds) - 1])
            at += len(job.bounds) - 1
    for job, result in zip(jobs, results):
        if job.after is not None:
            job.after(result)


class _Deferred:
    """The copies a `deferred_copies()` block has put off: torch gathers, split jobs."""

    __slots__ = ("gathers", "jobs", "_indexes")

    def __init__(self) -> None:
        self.gathers: list[tuple] = []
        self.jobs: list[_Job] = []
        self._indexes: dict[int, tuple] = {}

    def index(self, rows: np.ndarray):
        """`rows` as an index tensor, made once per block (the image keys of a batch share
        their rows)."""
        entry = self._indexes.get(id(rows))
        if entry is None or entry[0] is not rows:
            entry = self._indexes[id(rows)] = (rows, _index_tensor(rows))
        return entry[1]


@contextmanager
def deferred_copies():
    """Collect the copies of this block and run them all at the block's end: the torch
    gathers back to back in the calling thread, then the `split_rows` work of every array
    at once (one hand-over to the helper threads per batch, not per array).

    Arrays filled this way must not be read inside the block.
    """
    saved = getattr(_setting, "deferred", None)
    deferred = _Deferred()
    _setting.deferred = deferred
    try:
        yield
    finally:
        _setting.deferred = saved
    _torch_gather(deferred.gathers)
    _finish(deferred.jobs)
