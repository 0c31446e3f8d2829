"""Copies out of RAM on torch's threads: the same frames as numpy's take, for any dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import demoset.loader.arrays as arrays_module
from demoset.loader import SequenceDataset
from demoset.loader.threads import PARALLEL_COPY_BYTES, parallel_take

from tests.helpers import write_dataset

CAMERAS = ["agentview_image", "robot0_eye_in_hand_image"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.bool_])
def test_frames_equal_numpys_take_for_every_dtype(dtype):
    rng = np.random.default_rng(0)
    frame = (32, 32, 3)
    data = (rng.random((200, *frame)) * 200).astype(dtype)
    rows = rng.integers(0, len(data), 400)  # repeats and any order, as windows have
    rows[:3] = [199, 0, 199]
    out = np.empty((len(rows), *frame), dtype=dtype)
    assert out.nbytes >= PARALLEL_COPY_BYTES
    assert parallel_take(data, rows, out)
    np.testing.assert_array_equal(out, data.take(rows, axis=0))


def test_small_or_strided_copies_are_left_to_numpy():
    data = np.arange(1000 * 16, dtype=np.float32).reshape(1000, 16)
    out = np.full((10, 16), -1.0, dtype=np.float32)
    assert not parallel_take(data, np.arange(10), out)  # 640 bytes: not worth the threads
    assert (out == -1).all()
    big = np.zeros((400, 64, 64, 3), dtype=np.uint8)
    strided = big[:, ::2]
    out = np.empty((300, 32, 64, 3), dtype=np.uint8)
    assert not parallel_take(strided, np.arange(300), out)


def test_cached_image_batches_equal_file_reads_through_torchs_threads(tmp_path, monkeypatch):
    """Batches of 1 MB and more copied out of RAM on torch's threads equal the same
    batches read from the file, with two intra-op threads and with one."""
    path = write_dataset(
        tmp_path / "img.hdf5", n_demos=5, min_len=15, max_len=40,
        cameras=("agentview", "robot0_eye_in_hand"), image_size=64,
    )  # fmt: skip
    calls = []

    def counted(data, rows, out):
        done = parallel_take(data, rows, out)
        calls.append(done)
        return done

    monkeypatch.setattr(arrays_module, "parallel_take", counted)
    common = dict(seq_length=10, stats_cache=False, pad_seq_length=True, pad_frame_stack=True)
    ram = SequenceDataset(path, CAMERAS, ["actions"], cache_mode="all", **common)
    file = SequenceDataset(path, CAMERAS, ["actions"], cache_mode="low_dim", **common)
    rng = np.random.default_rng(1)
    threads = torch.get_num_threads()
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            for _ in range(6):
                index = rng.integers(0, len(ram), 16)
                got, want = ram.get_batch(index), file.get_batch(index)
                for group in ("obs", "next_obs"):
                    for key in CAMERAS:
                        np.testing.assert_array_equal(got[group][key], want[group][key])
    finally:
        torch.set_num_threads(threads)
    assert any(calls)  # the image copies went to torch's threads
