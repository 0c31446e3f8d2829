"""Batch copies shared by threads (demoset.loader.copying): every row copied once, errors
raised only after every part has finished, the tuner following measured speed, gathers from
RAM on torch's threads (never in a forked child, where they would hang), and batches
identical whatever the number of threads."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest

from demoset.loader import SequenceDataset
from demoset.loader.copying import (
    MIN_PART_BYTES,
    Tuner,
    copy_threads,
    deferred_copies,
    split_rows,
    torch_take,
)

from tests.helpers import write_dataset


def test_split_rows_copies_every_row_once_over_threads():
    rows = 1000
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def copy(a: int, b: int) -> int:
        with lock:
            seen.append((a, b, threading.current_thread().name))
        time.sleep(0.002)  # long enough for a helper to take parts too
        return a

    done = []
    with copy_threads(3):
        split_rows(rows, 40 * MIN_PART_BYTES, copy, after=done.append)
    covered = np.zeros(rows, dtype=int)
    for a, b, _ in seen:
        covered[a:b] += 1
    assert (covered == 1).all() and len(seen) == 40
    assert len({name for *_, name in seen}) > 1  # helpers took part
    assert done == [sorted(a for a, _, _ in seen)]  # results in row order, then `after`
    # small copies stay in the calling thread, in one part
    seen.clear()
    with copy_threads(3):
        split_rows(rows, MIN_PART_BYTES // 2, copy)
    assert [(a, b) for a, b, _ in seen] == [(0, rows)]


def test_deferred_copies_run_together_at_the_end_of_the_block(two_torch_threads):
    order: list[str] = []
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (200, 64, 64, 3), dtype=np.uint8)
    rows = [rng.integers(0, len(source), 160) for _ in range(2)]
    outs = [np.zeros((160, 64, 64, 3), dtype=np.uint8) for _ in range(2)]
    with copy_threads(2), deferred_copies():
        split_rows(
            10,
            4 * MIN_PART_BYTES,
            lambda a, b: order.append("x"),
            lambda r: order.append("after x"),
        )
        assert torch_take(source, rows[0], outs[0])
        split_rows(
            10,
            4 * MIN_PART_BYTES,
            lambda a, b: order.append("y"),
            lambda r: order.append("after y"),
        )
        assert torch_take(source, rows[1], outs[1])
        assert order == [] and not any(out.any() for out in outs)  # nothing copied yet
    assert sorted(order[:8]) == ["x"] * 4 + ["y"] * 4
    assert order[8:] == ["after x", "after y"]
    for out, r in zip(outs, rows):
        np.testing.assert_array_equal(out, source[r])


def test_an_error_is_raised_after_every_part_has_finished():
    finished = []

    def copy(a: int, b: int) -> None:
        if a == 0:
            raise ValueError("bad part")
        time.sleep(0.01)
        finished.append(a)

    with copy_threads(2), pytest.raises(ValueError, match="bad part"):
        split_rows(8, 8 * MIN_PART_BYTES, copy)
    # parts already taken when the error came finished; none runs after the raise
    count = len(finished)
    time.sleep(0.05)
    assert len(finished) == count


@pytest.fixture
def two_torch_threads():
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def _take_in_child(source, rows, out, queue) -> None:
    with copy_threads(2):
        used = torch_take(source, rows, out)
    if not used:
        source.take(rows, axis=0, out=out)
    queue.put((used, bool(np.array_equal(out, source[rows]))))


def test_torch_take_gathers_like_numpy_and_never_in_a_forked_child(two_torch_threads):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (400, 64, 64, 3), dtype=np.uint8)
    rows = rng.integers(0, len(source), 300)
    out = np.zeros((len(rows), 64, 64, 3), dtype=np.uint8)
    with copy_threads(1):
        assert not torch_take(source, rows, out)  # one thread: the caller copies with numpy
    with copy_threads(2):
        assert not torch_take(source, rows[:4], out[:4])  # too small to split
        assert not out.any()
        assert torch_take(source, rows, out)
        wide = source.astype(np.uint16)  # a dtype left to numpy
        assert not torch_take(wide, rows, np.zeros(out.shape, dtype=np.uint16))
    np.testing.assert_array_equal(out, source[rows])
    # the parent's torch threads have run: a forked child starting them again would hang
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=_take_in_child, args=(source, rows, np.zeros_like(out), queue))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == (False, True)


def test_tuner_uses_the_faster_and_keeps_trying_the_other():
    tuner = Tuner()
    assert tuner.choose(1) == 1  # nothing to choose
    assert tuner.choose(2) == 2  # each option is tried until it has a measurement
    tuner.record(2, 10_000_000, 0.001)
    assert tuner.choose(2) == 1
    tuner.record(1, 10_000_000, 0.002)
    picks = [tuner.choose(2) for _ in range(16 * Tuner.EXPLORE_EVERY)]  # 2x faster: far apart
    assert picks.count(1) == 4 and picks.count(2) == len(picks) - 4
    tuner.record(1, 10_000_000, 0.00105)  # close: the other is tried 4x as often
    for _ in range(20):
        tuner.record(1, 10_000_000, 0.00105)
    picks = [tuner.choose(2) for _ in range(16 * Tuner.EXPLORE_EVERY)]
    assert picks.count(1) == 16
    # the machine gets busy: two threads turn slower, and the tuner follows
    for _ in range(10):
        tuner.record(2, 10_000_000, 0.005)
    assert tuner.choose(2) == 1


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_batches_are_the_same_with_one_and_with_two_threads(
    tmp_path, compression, two_torch_threads
):
    path = write_dataset(
        tmp_path / "big.hdf5",
        n_demos=3,
        min_len=30,
        max_len=40,
        cameras=("agentview", "robot0_eye_in_hand"),
        image_size=84,
        image_compression=compression,
    )
    keys = ["object", "agentview_image", "robot0_eye_in_hand_image"]
    ids = np.random.default_rng(0).permutation(90)[:32]
    for mode in ("all", "low_dim", None):
        batches = []
        for threads in (1, 2):
            ds = SequenceDataset(
                path, keys, seq_length=10, frame_stack=2, cache_mode=mode, copy_threads=threads
            )
            batches.append(ds.get_batch(ids[ids < len(ds)]))
        for group in ("obs", "next_obs"):
            for key in keys:
                np.testing.assert_array_equal(batches[0][group][key], batches[1][group][key])
