"""Batch arrays reuse memory only once nothing refers to the batch that held it."""

from __future__ import annotations

import gc

import numpy as np
import torch

from demoset.loader import SequenceDataset, collate
from demoset.loader.buffers import BufferPool


def test_a_block_is_reused_only_after_every_view_is_gone():
    pool = BufferPool(max_blocks=4)
    a = pool.empty((64, 84, 84, 3), np.uint8)
    a[...] = 7
    view = a[3:5]  # a view keeps the block in use after `a` goes
    tensor = torch.from_numpy(a[10])  # so does a tensor made from a view
    del a
    b = pool.empty((64, 84, 84, 3), np.uint8)
    b[...] = 9
    assert np.all(view == 7) and bool((tensor == 7).all())
    del view
    c = pool.empty((64, 84, 84, 3), np.uint8)  # the first block is still held by `tensor`
    c[...] = 11
    assert bool((tensor == 7).all())
    assert len(pool._blocks) == 3
    del tensor, b, c
    for _ in range(10):
        d = pool.empty((64, 84, 84, 3), np.uint8)
        del d
    assert len(pool._blocks) == 3  # free blocks were reused, none added


def test_pool_is_bounded_when_the_caller_keeps_every_array():
    pool = BufferPool(max_blocks=3)
    kept = [pool.empty((1 << 20,), np.uint8) for _ in range(8)]
    for i, x in enumerate(kept):
        x[...] = i
    assert len(pool._blocks) == 3
    assert all(int(x[0]) == i and int(x[-1]) == i for i, x in enumerate(kept))
    small = pool.empty((10,), np.float32)  # small arrays are not pooled
    assert small.base is None


def test_batches_kept_by_the_caller_are_never_overwritten(make_dataset):
    path = make_dataset(n_demos=4, min_len=30, max_len=40, cameras=("agentview",), image_size=84)
    ds = SequenceDataset(
        path,
        ["robot0_eef_pos", "agentview_image"],
        seq_length=5,
        cache_mode="all",
        stats_cache=False,
    )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=8,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    kept, expected = [], []
    for batch in loader:
        kept.append(batch["obs"]["agentview_image"])
        expected.append(ds.get_batch(batch["index"].numpy())["obs"]["agentview_image"].copy())
    gc.collect()
    for got, want in zip(kept, expected):
        assert np.array_equal(got.numpy(), want)
    # once the batches are dropped, a new epoch runs on the same blocks
    del kept, got, batch
    gc.collect()
    from demoset.loader.buffers import batch_buffers

    before = batch_buffers.nbytes
    for _ in loader:
        pass
    assert batch_buffers.nbytes == before
