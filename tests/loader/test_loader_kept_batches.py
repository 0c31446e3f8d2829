"""Batches the caller keeps are its own: later batches never write into their memory."""

from __future__ import annotations

import gc

import numpy as np
import torch

from demoset.loader import SequenceDataset, collate


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
