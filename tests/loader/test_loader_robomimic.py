"""demoset.SequenceDataset gives exactly robomimic 0.3.0's samples (differential tests).

robomimic's SequenceDataset is the reference: for every window configuration (frame_stack
1..3, seq_length 1 and 10, both pad flags) and every cache mode, every index of the dataset
must give equal arrays, pad masks, goals and next observations, both from the dataset
itself and through a DataLoader with torch's default collate (robomimic's train.py way). robomimic's output does not
depend on its cache mode except for the dtype of dataset keys (float32 when cached, as
stored otherwise), so its "low_dim" output is the reference for all three of demoset's
modes, and its "all" and None modes are compared once each.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from demoset.errors import ConfigError
from demoset.loader import SequenceDataset

from tests.helpers import write_dataset

LOW_DIM = {"robot0_eef_pos": 3, "object": 10}
CAMERAS = ("agentview", "robot0_eye_in_hand")
OBS_KEYS = ["robot0_eef_pos", "object", "agentview_image", "robot0_eye_in_hand_image"]
DATASET_KEYS = ["actions", "rewards", "dones"]
WINDOWS = list(itertools.product([1, 2, 3], [1, 10], [True, False], [True, False]))


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("loader_rm") / "d.hdf5"
    return write_dataset(
        path,
        n_demos=5,
        min_len=12,
        max_len=25,
        low_dim=LOW_DIM,
        cameras=CAMERAS,
        image_size=16,
        filter_keys={"train": ["demo_0", "demo_2", "demo_3"]},
    )


def init_obs_utils(obs_keys):
    """robomimic needs its global obs-modality registry set before its dataset works."""
    import robomimic.utils.obs_utils as ObsUtils

    ObsUtils.initialize_obs_utils_with_obs_specs(
        {
            "obs": {
                "low_dim": [k for k in obs_keys if not k.endswith("_image")],
                "rgb": [k for k in obs_keys if k.endswith("_image")],
            }
        }
    )


def robomimic_samples(
    path, obs_keys=OBS_KEYS, dataset_keys=DATASET_KEYS, **kwargs
) -> tuple[list, object]:
    """All samples of robomimic's SequenceDataset, and the dataset (its file handle closed)."""
    from robomimic.utils.dataset import SequenceDataset as RobomimicDataset

    init_obs_utils(obs_keys)
    kwargs.setdefault("hdf5_cache_mode", "low_dim")
    rm = RobomimicDataset(path, obs_keys, dataset_keys, **kwargs)
    samples = [rm[i] for i in range(len(rm))]
    # robomimic keeps the file open with its own flags; one process may not open it twice
    rm.close_and_delete_hdf5_handle()
    return samples, rm


def assert_same(ours, ref, path="", exact=True):
    """Same nested keys, shapes and values (dataset keys compared as float32)."""
    if isinstance(ref, dict):
        assert isinstance(ours, dict), path
        assert set(ours) == set(ref), f"{path}: keys {sorted(ours)} != {sorted(ref)}"
        for key in ref:
            assert_same(ours[key], ref[key], f"{path}/{key}", exact)
        return
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{path}: shape {ours.shape} != {ref.shape}"
    if exact:
        assert ours.dtype == ref.dtype, f"{path}: dtype {ours.dtype} != {ref.dtype}"
        np.testing.assert_array_equal(ours, ref, err_msg=path)
    else:
        np.testing.assert_allclose(ours, ref.astype(ours.dtype), rtol=1e-5, atol=1e-5, err_msg=path)


def as_float32(sample: dict, keys=DATASET_KEYS) -> dict:
    """robomimic's dataset keys as its cached modes give them (float32)."""
    return {k: (np.asarray(v, dtype=np.float32) if k in keys else v) for k, v in sample.items()}


def without(sample: dict, *drop) -> dict:
    out = {}
    for key, value in sample.items():
        if key in drop:
            continue
        out[key] = without(value, *drop) if isinstance(value, dict) else value
    return out


def stack(samples: list[dict]) -> dict:
    """Samples collated into one dict of [N, ...] arrays (compared key by key at once)."""
    out = {}
    for key, value in samples[0].items():
        if isinstance(value, dict):
            out[key] = stack([s[key] for s in samples])
        else:
            out[key] = np.stack([np.asarray(s[key]) for s in samples])
    return out


def all_samples(ds: SequenceDataset) -> dict:
    """Every sample of `ds` in one batched gather; checks and drops "index"."""
    batch = ds.get_batch(np.arange(len(ds)))
    np.testing.assert_array_equal(batch.pop("index"), np.arange(len(ds)))
    return batch


def through_default_collate(ds: SequenceDataset, batch_size: int = 7) -> dict:
    """Every sample of `ds` through a shuffled DataLoader with torch's default collate (no
    collate_fn, as robomimic's train.py builds it), put back in index order; checks that
    every batch is torch tensors and drops "index"."""
    import torch

    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    batches = []
    for batch in loader:
        batches.append(tensors_to_numpy(batch))
    out = concat(batches)
    order = np.argsort(out.pop("index"))
    np.testing.assert_array_equal(np.sort(order), np.arange(len(ds)))
    return take(out, order)


def tensors_to_numpy(tree: dict) -> dict:
    import torch

    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out[key] = tensors_to_numpy(value)
        else:
            assert isinstance(value, torch.Tensor), key
            out[key] = value.numpy()
    return out


def concat(batches: list[dict]) -> dict:
    return {
        key: concat([b[key] for b in batches])
        if isinstance(value, dict)
        else np.concatenate([b[key] for b in batches])
        for key, value in batches[0].items()
    }


def take(tree: dict, order: np.ndarray) -> dict:
    return {k: take(v, order) if isinstance(v, dict) else v[order] for k, v in tree.items()}


def one_by_one(ds: SequenceDataset) -> dict:
    """Every sample of `ds` through ds[i], collated; checks and drops "index"."""
    samples = [ds[i] for i in range(len(ds))]
    assert [s.pop("index") for s in samples] == list(range(len(ds)))
    return stack(samples)


@pytest.mark.parametrize("frame_stack,seq_length,pad_frame_stack,pad_seq_length", WINDOWS)
def test_windows_match_robomimic_in_every_cache_mode(
    dataset_path, frame_stack, seq_length, pad_frame_stack, pad_seq_length
):
    window = dict(
        frame_stack=frame_stack,
        seq_length=seq_length,
        pad_frame_stack=pad_frame_stack,
        pad_seq_length=pad_seq_length,
    )
    samples, rm = robomimic_samples(dataset_path, get_pad_mask=True, goal_mode="last", **window)
    ref = stack([as_float32(s) for s in samples])
    for cache_mode in ("all", "low_dim", None):
        ds = SequenceDataset(
            dataset_path,
            OBS_KEYS,
            DATASET_KEYS,
            get_pad_mask=True,
            goal_mode="last",
            cache_mode=cache_mode,
            **window,
        )
        assert len(ds) == len(rm) == ds.total_num_sequences
        assert ds.demos == rm.demos and ds.num_demos == rm.n_demos
        assert_same(all_samples(ds), ref, f"[{cache_mode}]")
        assert_same(through_default_collate(ds), ref, f"[{cache_mode}, default collate]")
        ds.close()
    # without pad masks and goals the same samples lose exactly those entries
    ds = SequenceDataset(dataset_path, OBS_KEYS, DATASET_KEYS, cache_mode="low_dim", **window)
    assert_same(all_samples(ds), without(ref, "pad_mask", "goal_obs"), "[plain]")
    ds.close()


@pytest.mark.parametrize("cache_mode", ["all", "low_dim", None])
def test_single_samples_match_robomimic_own_cache_modes(dataset_path, cache_mode):
    """ds[i] one at a time; robomimic "all" caches whole samples, None reads the file."""
    window = dict(
        frame_stack=2, seq_length=10, pad_frame_stack=True, pad_seq_length=True, get_pad_mask=True
    )
    samples, _ = robomimic_samples(
        dataset_path, hdf5_cache_mode=cache_mode, goal_mode="last", **window
    )
    ds = SequenceDataset(
        dataset_path, OBS_KEYS, DATASET_KEYS, cache_mode=cache_mode, goal_mode="last", **window
    )
    # robomimic's None mode gives dataset keys in their stored dtype; demoset float32 always
    ref = stack([as_float32(s) for s in samples])
    assert_same(one_by_one(ds), ref, f"[{cache_mode}]")
    assert_same(through_default_collate(ds, 5), ref, f"[{cache_mode}, default collate]")
    ds.close()


@pytest.mark.parametrize("cache_mode", ["all", "low_dim", None])
def test_filter_key_and_no_next_obs(dataset_path, cache_mode):
    window = dict(frame_stack=3, seq_length=10, pad_frame_stack=True, pad_seq_length=False)
    samples, rm = robomimic_samples(
        dataset_path, filter_by_attribute="train", load_next_obs=False, **window
    )
    ds = SequenceDataset(
        dataset_path,
        OBS_KEYS,
        DATASET_KEYS,
        filter_key="train",
        load_next_obs=False,
        cache_mode=cache_mode,
        **window,
    )
    assert ds.demos == ["demo_0", "demo_2", "demo_3"] == rm.demos
    ref = stack([as_float32(s) for s in samples])
    assert_same(all_samples(ds), ref)
    assert_same(through_default_collate(ds), ref, "[default collate]")
    ds.close()


def test_normalize_obs_matches_robomimic(dataset_path):
    """robomimic 0.3.0 normalises only one-step windows (it asserts otherwise); demoset any."""
    low_dim = ["robot0_eef_pos", "object"]
    samples, rm = robomimic_samples(
        dataset_path, obs_keys=low_dim, hdf5_normalize_obs=True, goal_mode="last"
    )
    ref_stats = rm.get_obs_normalization_stats()
    ds = SequenceDataset(dataset_path, low_dim, DATASET_KEYS, normalize_obs=True, goal_mode="last")
    stats = ds.get_obs_normalization_stats()
    assert set(stats) == set(ref_stats)
    for key in stats:
        for name in ("mean", "std"):
            assert stats[key][name].shape == ref_stats[key][name].shape
            assert stats[key][name].dtype == ref_stats[key][name].dtype
            np.testing.assert_allclose(stats[key][name], ref_stats[key][name], rtol=1e-5, atol=1e-6)
    ref = stack([as_float32(s) for s in samples])
    assert_same(all_samples(ds), ref, exact=False)
    assert_same(through_default_collate(ds), ref, "[default collate]", exact=False)
    ds.close()

    # longer windows: robomimic's raw windows normalised by its own statistics
    window = dict(frame_stack=2, seq_length=10, get_pad_mask=True)
    raw, _ = robomimic_samples(dataset_path, obs_keys=low_dim, goal_mode="last", **window)
    expected = stack([as_float32(s) for s in raw])
    for group in ("obs", "next_obs", "goal_obs"):
        for key in low_dim:
            s = ref_stats[key]
            expected[group][key] = (expected[group][key] - s["mean"][0]) / s["std"][0]
    ds = SequenceDataset(
        dataset_path, low_dim, DATASET_KEYS, normalize_obs=True, goal_mode="last", **window
    )
    assert_same(all_samples(ds), expected, exact=False)
    assert_same(through_default_collate(ds), expected, "[default collate]", exact=False)
    ds.close()


def test_too_short_demos_are_refused_like_robomimic(tmp_path):
    """Where robomimic asserts (a demo shorter than an unpadded window), demoset says why."""
    from robomimic.utils.dataset import SequenceDataset as RobomimicDataset

    path = write_dataset(
        tmp_path / "short.hdf5", n_demos=4, min_len=2, max_len=6, low_dim=LOW_DIM, seed=3
    )
    init_obs_utils(["object"])
    for fs, sl, pfs, psl in WINDOWS:
        window = dict(frame_stack=fs, seq_length=sl, pad_frame_stack=pfs, pad_seq_length=psl)
        try:
            rm = RobomimicDataset(
                path, ["object"], ["actions"], hdf5_cache_mode="low_dim", **window
            )
            [rm[i] for i in range(len(rm))]
            rm.close_and_delete_hdf5_handle()
            robomimic_ok = True
        except AssertionError:
            robomimic_ok = False
        try:
            SequenceDataset(path, ["object"], **window).close()
            ours_ok = True
        except ConfigError as exc:
            assert "steps but frame_stack" in str(exc) and "demo_" in str(exc)
            ours_ok = False
        assert ours_ok == robomimic_ok, window
