"""Statistics stored in the file: exact moments and bounded quantiles for any union of demos."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import demoset.loader.stats
from demoset.cli.main import main
from demoset.edit import merge, subset
from demoset.editing import trim_demos
from demoset.format import DatasetWriter, open_dataset, validate
from demoset.format.quantiles import RELATIVE_ACCURACY, ZERO_LIMIT, QuantileSketch
from demoset.format.stored_stats import STATS_GROUP, read_stats, store_stats, union_stats
from demoset.loader import SequenceDataset

from tests.helpers import LIFT_ENV, write_dataset

SPLIT = {"train": ["demo_0", "demo_2", "demo_3", "demo_5"], "valid": ["demo_1", "demo_4"]}


def within_bound(estimate, exact):
    return np.all(np.abs(estimate - exact) <= RELATIVE_ACCURACY * np.abs(exact) + ZERO_LIMIT)


def test_sketch_merge_is_exact_and_bounded():
    rng = np.random.default_rng(1)
    # heavy tails, both signs, exact zeros, tiny values: what averaging per-part quantiles gets wrong
    parts = [
        rng.standard_cauchy((500, 3)),
        rng.normal(40, 1, (50, 3)),
        np.zeros((30, 3)),
        rng.uniform(-1e-12, 1e-12, (20, 3)),
    ]
    merged = QuantileSketch.of(parts[0])
    for p in parts[1:]:
        merged = merged.merge(QuantileSketch.of(p))
    everything = np.concatenate(parts)
    direct = QuantileSketch.of(everything)
    np.testing.assert_array_equal(merged.keys, direct.keys)
    np.testing.assert_array_equal(merged.counts, direct.counts)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0):
        exact = np.quantile(everything, q, axis=0, method="lower")
        assert within_bound(merged.quantile(q), exact), q
    # the mean of per-part q99s is far off; the merged sketch is not
    naive = np.mean([np.quantile(p, 0.99, axis=0) for p in parts], axis=0)
    exact99 = np.quantile(everything, 0.99, axis=0, method="lower")
    assert not within_bound(naive, exact99)


@pytest.fixture
def stored(tmp_path):
    path = write_dataset(tmp_path / "d.hdf5", n_demos=6, filter_keys=SPLIT, action_dict=True)
    store_stats(path)
    return path


def test_union_of_a_filter_key_both_ways(stored):
    with open_dataset(stored) as df:
        demos = df.demos_for("valid")
        lengths = df.lengths(demos)
        everything = np.concatenate([df.read(d, "obs/object") for d in demos]).astype(np.float64)
    from_file, was_stored = union_stats(stored, demos)
    assert was_stored
    s = from_file["obs/object"]
    np.testing.assert_allclose(s.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.std, everything.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(s.min, everything.min(axis=0))
    for q in (0.01, 0.99):
        assert within_bound(s.quantile(q), np.quantile(everything, q, axis=0, method="lower"))
    with h5py.File(stored, "r") as h5:
        assert read_stats(h5, "obs/object", demos, lengths + 1) is None  # stale: not trusted


def test_loader_uses_stored_stats_and_gets_todays_result(stored, tmp_path, monkeypatch):
    plain = write_dataset(tmp_path / "plain.hdf5", n_demos=6, filter_keys=SPLIT, action_dict=True)
    kwargs = dict(
        obs_keys=["robot0_eef_pos", "object"],
        dataset_keys=["actions"],
        action_keys=["action_dict/abs_pos", "action_dict/gripper"],
        action_config={
            "action_dict/abs_pos": {"normalization": "min_max"},
            "action_dict/gripper": {"normalization": "gaussian"},
        },
        normalize_obs=True,
        filter_key="train",
        stats_cache=False,
    )
    with SequenceDataset(plain, **kwargs) as ds:
        want_obs, want_act = ds.get_obs_normalization_stats(), ds.get_action_normalization_stats()

    def no_pass(arrays):
        raise AssertionError("the loader read the arrays for statistics the file stores")

    monkeypatch.setattr(demoset.loader.stats, "compute_moments", no_pass)
    with SequenceDataset(stored, **kwargs) as ds:
        got_obs, got_act = ds.get_obs_normalization_stats(), ds.get_action_normalization_stats()
    for key in want_obs:
        for name in ("mean", "std"):
            np.testing.assert_array_equal(got_obs[key][name], want_obs[key][name])
    for key in want_act:
        for name in ("scale", "offset"):
            np.testing.assert_array_equal(got_act[key][name], want_act[key][name])


def test_subset_merge_and_edit_carry_stats(stored, tmp_path):
    sub = tmp_path / "sub.hdf5"
    subset(stored, sub, filter_key="valid", renumber=True)
    with h5py.File(sub, "r") as h5, h5py.File(stored, "r") as src:
        assert sorted(h5[STATS_GROUP].keys()) == ["demo_0", "demo_1"]
        np.testing.assert_array_equal(
            h5[f"{STATS_GROUP}/demo_1/actions/moments"][()],
            src[f"{STATS_GROUP}/demo_4/actions/moments"][()],
        )
    assert union_stats(sub)[1]
    merged = tmp_path / "merged.hdf5"
    merge([stored, sub], merged)
    assert union_stats(merged)[1]
    trimmed = tmp_path / "trim.hdf5"
    trim_demos(stored, trimmed, start=2)
    stats, was_stored = union_stats(trimmed)
    assert was_stored
    with open_dataset(trimmed) as df:
        acts = np.concatenate([df.read(d, "actions") for d in df.demos]).astype(np.float32)
        acts = acts.astype(np.float64)  # statistics of actions as the loaders read them
    np.testing.assert_allclose(stats["actions"].mean, acts.mean(axis=0), rtol=1e-12)
    for path in (sub, merged, trimmed, stored):
        assert [f for f in validate(path) if f.level == "error"] == []


def test_cli_stats_store_and_info(tmp_path, capsys):
    path = write_dataset(tmp_path / "c.hdf5", n_demos=3)
    with h5py.File(path, "a") as h5:
        del h5[STATS_GROUP]  # as a file written by another tool
    assert main(["stats", path, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["stored"] is False
    assert main(["stats", path, "--store"]) == 0
    assert "stored in the file" in capsys.readouterr().out
    assert main(["info", path, "--stats", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)["stats"]
    assert after["stored"] is True
    np.testing.assert_allclose(after["keys"]["actions"]["mean"], before["keys"]["actions"]["mean"])
    assert main(["stats", str(tmp_path / "missing.hdf5")]) == 2


def test_robomimic_ignores_the_stats_group(stored):
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset as RobomimicDataset

    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["object"], "rgb": []}})
    ds = RobomimicDataset(
        hdf5_path=stored,
        obs_keys=("object",),
        dataset_keys=("actions",),
        hdf5_cache_mode="low_dim",
        hdf5_normalize_obs=True,
    )
    assert len(ds) > 0 and ds[0]["actions"].shape[-1] == 7


def test_the_writer_stores_statistics_with_each_demo(tmp_path):
    path = write_dataset(tmp_path / "w.hdf5", n_demos=4, cameras=("agentview",))
    stats, was_stored = union_stats(path)
    assert was_stored
    assert set(stats) == {"actions", "obs/robot0_eef_pos", "obs/object"}  # no image keys
    with open_dataset(path) as df:
        acts = np.concatenate([df.read(d, "actions") for d in df.demos]).astype(np.float32)
    np.testing.assert_array_equal(stats["actions"].max, acts.max(axis=0))
    plain = tmp_path / "plain.hdf5"
    with DatasetWriter(plain, env_meta=LIFT_ENV, stats=False) as w:
        w.add_demo(actions=np.zeros((3, 2)), obs={"x": np.zeros((3, 1))})
    with h5py.File(plain, "r") as h5:
        assert STATS_GROUP not in h5
