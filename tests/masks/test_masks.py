"""Filter keys: create/delete/rename, train/valid split equal to robomimic's, nested sizes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from demoset import masks
from demoset.errors import DemoNotFoundError, FilterKeyError
from demoset.format import open_dataset

from tests.helpers import stub_torchvision


def test_create_list_rename_delete(make_dataset):
    path = make_dataset(n_demos=5)
    masks.create_filter_key(path, "good", ["demo_3", "demo_1"])
    assert masks.list_filter_keys(path) == {"good": ["demo_3", "demo_1"]}
    with pytest.raises(FilterKeyError, match="exists"):
        masks.create_filter_key(path, "good", ["demo_0"])
    masks.create_filter_key(path, "good", ["demo_0"], overwrite=True)
    masks.rename_filter_key(path, "good", "best")
    assert masks.list_filter_keys(path) == {"best": ["demo_0"]}
    masks.delete_filter_key(path, "best")
    assert masks.list_filter_keys(path) == {}
    with pytest.raises(DemoNotFoundError, match="demo_42"):
        masks.create_filter_key(path, "x", ["demo_42"])
    with pytest.raises(FilterKeyError, match="no filter key"):
        masks.delete_filter_key(path, "missing")
    with pytest.raises(FilterKeyError, match="invalid filter key name"):
        masks.create_filter_key(path, "../evil", ["demo_0"])


def test_edits_leave_demo_arrays_untouched(make_dataset):
    path = make_dataset(n_demos=4, cameras=("agentview",))
    with open_dataset(path) as df:
        before = {d: df.read(d, "obs/agentview_image").tobytes() for d in df.demos}
    masks.split_train_valid(path, ratio=0.5)
    masks.filter_by_size(path, 2, mode="random")
    with open_dataset(path) as df:
        assert {d: df.read(d, "obs/agentview_image").tobytes() for d in df.demos} == before


def _robomimic_split(path, ratio, filter_key=None):
    """Run robomimic's own split_train_val (the reference) as its script's main does."""
    stub_torchvision()  # robomimic's scripts import torchvision via robomimic.algo; unused here
    from robomimic.scripts.split_train_val import split_train_val_from_hdf5

    np.random.seed(0)
    split_train_val_from_hdf5(str(path), val_ratio=ratio, filter_key=filter_key)
    with h5py.File(path, "r") as f:
        return {k: [x.decode() for x in f["mask"][k][()]] for k in f["mask"]}


@pytest.mark.parametrize("n_demos, ratio", [(12, 0.1), (25, 0.2), (7, 0.5)])
def test_split_equals_robomimic(tmp_path, make_dataset, n_demos, ratio):
    ours = make_dataset(name="ours.hdf5", n_demos=n_demos, min_len=3, max_len=5)
    theirs = tmp_path / "theirs.hdf5"
    theirs.write_bytes(open(ours, "rb").read())
    result = masks.split_train_valid(ours, ratio=ratio)
    reference = _robomimic_split(theirs, ratio)
    assert result == {"train": reference["train"], "valid": reference["valid"]}
    assert masks.list_filter_keys(ours) == reference


def test_split_of_a_filter_key_equals_robomimic(tmp_path, make_dataset):
    ours = make_dataset(name="ours.hdf5", n_demos=15, min_len=3, max_len=5)
    masks.create_filter_key(ours, "good", [f"demo_{i}" for i in range(0, 15, 2)])
    theirs = tmp_path / "theirs.hdf5"
    theirs.write_bytes(open(ours, "rb").read())
    result = masks.split_train_valid(ours, ratio=0.3, filter_key="good")
    reference = _robomimic_split(theirs, 0.3, filter_key="good")
    assert set(result) == {"good_train", "good_valid"}
    assert (
        result["good_train"] == reference["good_train"]
        and result["good_valid"] == reference["good_valid"]
    )


def test_filter_by_size_nested_and_named(make_dataset):
    path = make_dataset(n_demos=30, min_len=2, max_len=3)
    name10, d10 = masks.filter_by_size(path, 10, mode="random", seed=3)
    name20, d20 = masks.filter_by_size(path, 20, mode="random", seed=3)
    assert (name10, name20) == ("10_demos", "20_demos")
    assert set(d10) <= set(d20) and len(d10) == 10 and len(d20) == 20
    _, first = masks.filter_by_size(path, 3)
    assert first == ["demo_0", "demo_1", "demo_2"]
    masks.split_train_valid(path)
    name, demos = masks.filter_by_size(path, 5, filter_key="train")
    assert name == "train_5_demos" and set(demos) <= set(masks.list_filter_keys(path)["train"])
    with pytest.raises(FilterKeyError, match="only 30"):
        masks.filter_by_size(path, 31)


def test_size_subset_rule():
    demos = [f"demo_{i}" for i in range(50)]
    for n in range(1, 50):
        assert set(masks.size_subset(demos, n, "random", 7)) <= set(
            masks.size_subset(demos, n + 1, "random", 7)
        )
    assert np.all(np.diff([int(d[5:]) for d in masks.size_subset(demos, 20, "random", 7)]) > 0)
