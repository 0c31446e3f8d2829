"""Batch arrays in recycled memory: a block is used again only once nothing refers to it."""

from __future__ import annotations

import numpy as np
import torch

from demoset.loader import SequenceDataset, collate
from demoset.loader.recycle import BLOCK_ALIGN, BlockPool

from tests.helpers import write_dataset

CAMERAS = ["agentview_image", "robot0_eye_in_hand_image"]


def address(a) -> int:
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data_ptr()


def test_block_returns_only_when_every_user_is_gone():
    pool = BlockPool()
    a = pool.empty((100, 84, 84, 3), np.uint8)
    a[...] = 7
    where = address(a)
    view, tensor = a[10:], torch.from_numpy(a)
    del a
    b = pool.empty((100, 84, 84, 3), np.uint8)  # the first block is still in use
    assert address(b) != where and not np.shares_memory(b, view)
    del view
    assert pool.free_bytes == 0
    del tensor
    assert pool.free_bytes >= 100 * 84 * 84 * 3
    c = pool.empty((100 * 84 * 84 * 3 // 4,), np.float32)  # as many bytes: the same block
    assert address(c) == where and c.flags.c_contiguous and c.flags.writeable
    assert c.dtype == np.float32
    assert pool.free_bytes == 0


def test_idle_blocks_are_capped():
    pool = BlockPool(max_free_bytes=3 * BLOCK_ALIGN, per_size=2)
    arrays = [pool.empty((BLOCK_ALIGN,), np.uint8) for _ in range(4)]
    del arrays
    assert pool.free_bytes == 2 * BLOCK_ALIGN  # two of one size
    big = [pool.empty((2 * BLOCK_ALIGN,), np.uint8) for _ in range(2)]
    del big
    assert pool.free_bytes == 2 * BLOCK_ALIGN  # no room for a 2-block one beside them
    pool.clear()
    assert pool.free_bytes == 0


def test_batches_kept_by_the_training_loop_never_change(tmp_path, monkeypatch):
    """Image batches of 1 MB and more come from the pool; keeping them must keep them."""
    path = write_dataset(
        tmp_path / "img.hdf5", n_demos=4, min_len=20, max_len=30,
        cameras=("agentview", "robot0_eye_in_hand"), image_size=64,
    )  # fmt: skip
    for cache_mode in ("all", "low_dim"):
        ds = SequenceDataset(
            path, CAMERAS, ["actions"], seq_length=8, cache_mode=cache_mode,
            stats_cache=False,
        )  # fmt: skip
        for collate_fn in (collate, None):
            loader = torch.utils.data.DataLoader(
                ds, batch_size=16, shuffle=True, collate_fn=collate_fn,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
            kept = [(b, {k: v.clone() for k, v in b["obs"].items()}) for b in loader]
            kept += [(b, {k: v.clone() for k, v in b["obs"].items()}) for b in loader]
            for batch, copy in kept:
                for key, value in copy.items():
                    assert torch.equal(batch["obs"][key], value)
            # the same batches with one thread (two cameras: gathered side by side on two)
            monkeypatch.setenv("DEMOSET_THREADS", "1")
            again = [b for b in torch.utils.data.DataLoader(
                ds, batch_size=16, shuffle=True, collate_fn=collate_fn,
                generator=torch.Generator().manual_seed(0),
            )]  # fmt: skip
            monkeypatch.delenv("DEMOSET_THREADS")
            for (batch, _), other in zip(kept, again):
                for group in ("obs", "next_obs"):
                    for key in CAMERAS:
                        assert torch.equal(batch[group][key], other[group][key])
