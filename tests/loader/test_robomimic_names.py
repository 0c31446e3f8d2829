"""SequenceDataset under robomimic's names: its keyword arguments, attributes and MetaDataset.

A dataset built with robomimic's spellings must give the samples of the one built with
demoset's; robomimic's attributes must read the same as robomimic 0.3.0's own dataset on the
same file; anything neither project knows, or that demoset cannot honour, is a ConfigError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demoset import SequenceDataset
from demoset.errors import ConfigError
from demoset.loader.robomimic_meta import RobomimicMetaDataset

from tests.helpers import write_dataset

LOW_DIM = {"robot0_eef_pos": 3, "object": 10}
OBS_KEYS = ["robot0_eef_pos", "object"]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return write_dataset(
        tmp_path_factory.mktemp("rm_names") / "d.hdf5",
        n_demos=5,
        min_len=12,
        max_len=25,
        low_dim=LOW_DIM,
        action_dict=True,
        filter_keys={"train": ["demo_0", "demo_2", "demo_3"]},
    )


ROBOMIMIC_KWARGS = dict(  # robomimic HEAD's dataset_factory passes exactly these names
    obs_keys=OBS_KEYS,
    action_keys=["abs_pos", "gripper"],
    dataset_keys=["actions", "rewards"],
    action_config={"abs_pos": {"normalization": "min_max"}, "gripper": {}},
    load_next_obs=True,
    frame_stack=2,
    seq_length=4,
    pad_frame_stack=True,
    pad_seq_length=False,
    get_pad_mask=True,
    goal_mode="last",
    hdf5_cache_mode="low_dim",
    hdf5_use_swmr=True,
    hdf5_normalize_obs=True,
    filter_by_attribute="train",
    demo_limit=2,
    lang=None,
)


def demoset_names(kwargs: dict) -> dict:
    renames = {
        "hdf5_cache_mode": "cache_mode",
        "hdf5_use_swmr": "swmr",
        "hdf5_normalize_obs": "normalize_obs",
        "filter_by_attribute": "filter_key",
    }
    return {renames.get(k, k): v for k, v in kwargs.items() if k != "lang"}


def assert_tree_equal(a, b, where=""):
    assert type(a) is type(b) or not isinstance(a, dict), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_tree_equal(a[k], b[k], f"{where}/{k}")
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


def test_robomimic_names_give_the_same_samples(path):
    ours = SequenceDataset(path, **demoset_names(ROBOMIMIC_KWARGS))
    theirs = SequenceDataset(hdf5_path=path, **ROBOMIMIC_KWARGS)
    assert len(ours) == len(theirs) > 0
    assert theirs.demos == ["demo_0", "demo_2"]  # filter key, then demo_limit
    ids = np.arange(len(ours))
    assert_tree_equal(ours.get_batch(ids), theirs.get_batch(ids))
    assert_tree_equal(ours.get_action_normalization_stats(), theirs.action_normalization_stats)
    assert_tree_equal(ours.get_obs_normalization_stats(), theirs.obs_normalization_stats)
    # robomimic's attribute names read demoset's fields
    assert (theirs.hdf5_path, theirs.hdf5_cache_mode, theirs.hdf5_use_swmr) == (
        path,
        "low_dim",
        True,
    )
    assert (theirs.hdf5_normalize_obs, theirs.filter_by_attribute) == (True, "train")
    assert (theirs.n_frame_stack, theirs.n_demos, theirs.total_num_sequences) == (2, 2, len(ours))
    ours.close()
    theirs.close()


def test_attributes_agree_with_robomimic_030(path):
    """The attributes robomimic's train.py and algos read, against robomimic's own dataset."""
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset as RobomimicDataset

    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": OBS_KEYS}})
    kwargs = dict(
        hdf5_path=path,
        obs_keys=OBS_KEYS,
        dataset_keys=["actions"],
        seq_length=10,
        hdf5_cache_mode="low_dim",
        hdf5_normalize_obs=True,
        filter_by_attribute="train",
    )
    ref = RobomimicDataset(**kwargs)
    ds = SequenceDataset(**kwargs)
    for name in ("demos", "n_demos", "total_num_sequences", "hdf5_path", "n_frame_stack"):
        assert getattr(ds, name) == getattr(ref, name), name
    assert len(ds) == len(ref)
    assert ds.get_dataset_sampler() is ref.get_dataset_sampler() is None
    ref_stats, stats = ref.get_obs_normalization_stats(), ds.get_obs_normalization_stats()
    assert stats.keys() == ref_stats.keys()
    for key in stats:
        np.testing.assert_allclose(stats[key]["std"], ref_stats[key]["std"], rtol=1e-5)
    # hdf5_file: a lazily opened read-only handle, closed by robomimic's method
    assert sorted(ds.hdf5_file["data"].keys()) == sorted(ref.hdf5_file["data"].keys())
    with ds.hdf5_file_opened() as f:
        assert f is ds.hdf5_file
    ds.close_and_delete_hdf5_handle()
    ref.close_and_delete_hdf5_handle()
    assert "num_sequences" in repr(ds)
    ds.close()


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"hdf5_pth": "x"}, "unknown argument 'hdf5_pth'"),
        ({"priority": True}, "unknown argument 'priority'"),
        ({"hdf5_cache_mode": "all", "cache_mode": "all"}, "'cache_mode' twice"),
        ({"lang": "pick the cube"}, "language embeddings"),
        ({"shuffled_obs_key_groups": [[["object"], ["robot0_eef_pos"]]]}, "not supported"),
        ({"hdf5_cache_mode": "everything"}, "cache_mode must be"),
    ],
)
def test_unknown_or_unsupported_arguments_are_one_line_config_errors(path, extra, message):
    with pytest.raises(ConfigError, match=message) as info:
        SequenceDataset(**{"hdf5_path": path, "obs_keys": OBS_KEYS, **extra})
    assert "\n" not in str(info.value)


def test_inert_values_of_unsupported_arguments_are_accepted(path):
    ds = SequenceDataset(
        hdf5_path=path,
        obs_keys=OBS_KEYS,
        dataset_keys=["actions"],
        lang=None,
        shuffled_obs_key_groups=[],
        first_n_demos=3,  # robomimic's dexmimicgen branch's demo_limit
    )
    assert ds.demos == ["demo_0", "demo_1", "demo_2"]
    with pytest.raises(ConfigError, match="needs the argument 'path' \\(robomimic: 'hdf5_path'\\)"):
        SequenceDataset(obs_keys=OBS_KEYS)
    ds.close()


def test_robomimic_meta_dataset_weights_and_sampler(path, tmp_path):
    """robomimic's per-sample weights become demoset's per-dataset shares; a new draw each epoch."""
    other = write_dataset(tmp_path / "o.hdf5", n_demos=2, min_len=12, max_len=25, low_dim=LOW_DIM)
    kwargs = dict(obs_keys=OBS_KEYS, dataset_keys=["actions"], hdf5_cache_mode="all")
    a, b = SequenceDataset(hdf5_path=path, **kwargs), SequenceDataset(hdf5_path=other, **kwargs)
    meta = RobomimicMetaDataset(datasets=[a, b], ds_weights=[1.0, 3.0])
    # unnormalised: every sample of b weighs 3x a sample of a
    expected = np.array([1.0 * len(a), 3.0 * len(b)]) / (len(a) + 3.0 * len(b))
    assert np.allclose(meta.weights / meta.weights.sum(), expected)
    per_size = RobomimicMetaDataset([a, b], [1.0, 3.0], normalize_weights_by_ds_size=True)
    assert np.allclose(per_size.weights / per_size.weights.sum(), [0.25, 0.75])
    np.random.seed(0)
    sampler = meta.get_dataset_sampler()
    first, second = list(sampler), list(sampler)
    assert len(first) == len(meta) and first != second
    np.random.seed(0)
    assert list(meta.get_dataset_sampler()) == first  # robomimic's seed makes it repeatable
    batch = next(iter(torch.utils.data.DataLoader(meta, batch_size=8, sampler=sampler)))
    assert batch["actions"].shape == (8, 1, 7)
    assert "SequenceDataset" in repr(meta)
    with pytest.raises(ConfigError, match="unknown argument 'ds_labels'"):
        RobomimicMetaDataset([a, b], [1.0, 1.0], ds_labels=["a", "b"])
    meta.close()
