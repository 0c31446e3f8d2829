"""A DataLoader without collate_fn (torch's default collate, robomimic's train.py way).

Every way a training script builds its loader - 0 or 2 worker processes, pin_memory on
or off, drop_last on or off, shuffled or with a sampler - must give the batches that
`collate_fn=demoset.loader.collate` gives, with the keys, shapes and dtypes torch's default
collate makes from the per-sample dicts. A user's own collate_fn still receives per-sample
dicts, and torch's default collate of any list of those is torch's own.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from demoset.loader import SampleBatch, SequenceDataset, collate
from demoset.loader.batch import Sample

from tests.helpers import write_dataset

OBS_KEYS = ["robot0_eef_pos", "object", "agentview_image"]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("default_collate") / "d.hdf5"
    return write_dataset(path, n_demos=4, min_len=8, max_len=16, cameras=("agentview",))


def assert_tree_equal(x, y, path=""):
    """Same nested keys; tensors of the same dtype, shape and values."""
    if isinstance(y, dict):
        assert type(x) is dict and set(x) == set(y), path
        for key in y:
            assert_tree_equal(x[key], y[key], f"{path}/{key}")
        return
    assert isinstance(x, torch.Tensor), path
    assert x.dtype == y.dtype and x.shape == y.shape, (
        f"{path}: {x.dtype} {x.shape} vs {y.dtype} {y.shape}"
    )
    assert torch.equal(x, y), path


def loader_batches(ds, collate_fn, workers, pin_memory, drop_last, how) -> list:
    kwargs = dict(batch_size=6, num_workers=workers, pin_memory=pin_memory, drop_last=drop_last)
    if how == "shuffle":
        kwargs.update(shuffle=True, generator=torch.Generator().manual_seed(3))
    else:  # a sampler of the user's: every other sample, backwards
        kwargs.update(sampler=list(range(len(ds) - 1, -1, -2)))
    if collate_fn is not None:
        kwargs["collate_fn"] = collate_fn
    with warnings.catch_warnings():  # pin_memory without an accelerator only warns
        warnings.simplefilter("ignore")
        return list(torch.utils.data.DataLoader(ds, **kwargs))


@pytest.mark.parametrize("cache_mode", ["all", None])
def test_default_collate_gives_the_batches_of_collate_in_every_loader_setting(
    image_file, cache_mode
):
    ds = SequenceDataset(
        image_file,
        OBS_KEYS,
        frame_stack=2,
        seq_length=3,
        get_pad_mask=True,
        goal_mode="last",
        cache_mode=cache_mode,
    )
    settings = itertools.product([0, 2], [False, True], [False, True], ["shuffle", "sampler"])
    for workers, pin_memory, drop_last, how in settings:
        if workers and (pin_memory or not drop_last):  # workers: one setting each way is enough
            continue
        setting = f"workers={workers} pin_memory={pin_memory} drop_last={drop_last} {how}"
        fast = loader_batches(ds, collate, workers, pin_memory, drop_last, how)
        default = loader_batches(ds, None, workers, pin_memory, drop_last, how)
        assert len(default) == len(fast) > 1, setting
        for got, want in zip(default, fast):
            assert_tree_equal(got, want, setting)
            # torch's default collate of the per-sample dicts, as robomimic's samples go
            ids = got["index"].tolist()
            assert_tree_equal(got, default_collate([ds[i] for i in ids]), setting)
        if drop_last:
            assert all(len(b["index"]) == 6 for b in default), setting
    ds.close()


def test_a_users_collate_fn_gets_sample_dicts_and_default_collate_of_them_is_torchs(
    image_file,
):
    ds = SequenceDataset(image_file, OBS_KEYS, seq_length=3, get_pad_mask=True)
    seen = []

    def my_collate(batch):
        seen.append(batch)
        # a user's collate that edits samples, then hands a list of them to torch
        samples = [dict(s, extra=np.float32(1.0)) for s in batch]
        return default_collate(samples)

    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=my_collate)
    out = next(iter(loader))
    batch = seen[0]
    assert isinstance(batch, SampleBatch) and len(batch) == 4
    samples = list(batch)
    assert all(isinstance(s, dict) for s in samples)
    assert [s["index"] for s in samples] == [0, 1, 2, 3]
    assert samples[2]["obs"]["object"].shape == (3, 10)
    assert out["extra"].shape == (4,)
    # lists of samples (also a slice of the batch) collate as torch collates dicts
    expected = default_collate([ds[i] for i in range(4)])
    assert_tree_equal(default_collate(samples), expected)
    assert_tree_equal(default_collate(batch[1:3]), default_collate([ds[1], ds[2]]))
    assert_tree_equal(default_collate(batch), expected)
    assert type(batch[0]) is Sample and type(ds[0]) is dict
    # the whole batch is not stacked again: its tensors are the gathered arrays
    whole = ds.__getitems__([5, 1, 2])
    tensors = default_collate(whole)
    for key in ("object", "agentview_image"):
        assert tensors["obs"][key].data_ptr() == whole.data["obs"][key].ctypes.data
    ds.close()
