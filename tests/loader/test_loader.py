"""demoset.loader beyond robomimic 0.3.0: action keys and normalisation, demo_limit, image
format, storage layouts, the stats cache, memory refusal, MetaDataset, refresh().

Features robomimic 0.3.0 lacks are checked against the rule their docstrings state, with
expected values computed here straight from the file through h5py.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import h5py
import hdf5plugin
import numpy as np
import pytest

import demoset.loader.alloc
import demoset.memory
from demoset.errors import ConfigError, InsufficientMemoryError, LayoutError
from demoset.format import DatasetWriter
from demoset.loader import MetaDataset, SequenceDataset, WindowIndex, collate, stats
from demoset.loader.arrays import FileArray, RamArray, fill_padding
from demoset.loader.batch import SampleBatch

from tests.helpers import LIFT_ENV, write_dataset

LOW_DIM = {"robot0_eef_pos": 3, "object": 10}
IMAGE_KEYS = ["agentview_image", "robot0_eye_in_hand_image"]
OBS_KEYS = ["robot0_eef_pos", "object", *IMAGE_KEYS]


@pytest.fixture
def image_file(tmp_path):
    return write_dataset(
        tmp_path / "img.hdf5",
        n_demos=5,
        min_len=8,
        max_len=20,
        cameras=("agentview", "robot0_eye_in_hand"),
        filter_keys={"train": ["demo_1", "demo_2", "demo_4"]},
        action_dict=True,
    )


def read_all(path, demos, key) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.concatenate([f[f"data/{d}/{key}"][()] for d in demos])


def assert_tree_equal(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}/{k}")
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
    np.testing.assert_array_equal(a, b, err_msg=path)


# ---------------------------------------------------------------------------- actions
def test_action_keys_are_normalised_and_concatenated_by_the_documented_rule(image_file):
    keys = ["action_dict/abs_pos", "action_dict/rel_rot_6d", "action_dict/gripper"]
    config = {
        "action_dict/abs_pos": {"normalization": "min_max", "format": "abs_pos"},
        "action_dict/gripper": {"normalization": "gaussian"},
    }  # rel_rot_6d absent from the config: not normalised
    ds = SequenceDataset(
        image_file,
        ["object"],
        dataset_keys=("actions",),
        action_keys=keys,
        action_config=config,
        seq_length=4,
        filter_key="train",
    )
    demos = ["demo_1", "demo_2", "demo_4"]
    raw = {k: read_all(image_file, demos, k).astype(np.float32) for k in keys}
    pos = raw["action_dict/abs_pos"]
    lo, hi = pos.min(0), pos.max(0)
    scale_pos = (hi - lo) / np.float32(1.999998)
    offset_pos = lo - scale_pos * np.float32(-0.999999)
    grip = read_all(image_file, demos, "action_dict/gripper").astype(np.float64)
    mean_g, std_g = grip.mean(0), grip.std(0)

    st = ds.get_action_normalization_stats()
    assert list(st) == keys
    np.testing.assert_allclose(st["action_dict/abs_pos"]["scale"][0], scale_pos, rtol=1e-6)
    np.testing.assert_allclose(
        st["action_dict/abs_pos"]["offset"][0], offset_pos, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(
        st["action_dict/rel_rot_6d"]["scale"], np.ones((1, 6), np.float32)
    )
    np.testing.assert_array_equal(
        st["action_dict/rel_rot_6d"]["offset"], np.zeros((1, 6), np.float32)
    )
    np.testing.assert_allclose(st["action_dict/gripper"]["offset"][0], mean_g, rtol=1e-6)
    np.testing.assert_allclose(st["action_dict/gripper"]["scale"][0], std_g, rtol=1e-6)
    for s in st.values():
        assert s["scale"].dtype == s["offset"].dtype == np.float32

    batch = ds.get_batch(np.arange(len(ds)))
    assert batch["actions"].shape == (len(ds), 4, 3 + 6 + 1)
    expected = np.concatenate(
        [(batch[k] - st[k]["offset"][0]) / st[k]["scale"][0] for k in keys], axis=-1
    )
    np.testing.assert_array_equal(batch["actions"], expected)
    # min_max maps the data range onto [-0.999999, 0.999999]
    pos_norm = batch["actions"][..., :3]
    assert pos_norm.min() >= -0.999999 - 1e-6 and pos_norm.max() <= 0.999999 + 1e-6
    np.testing.assert_allclose(pos_norm.reshape(-1, 3).min(0), -0.999999, atol=1e-5)
    # each action key is also in the sample raw, and the windows are robomimic's windows
    flat = ds._index.windows(np.arange(len(ds))).flat
    for k in keys:
        np.testing.assert_array_equal(batch[k], raw[k][flat])
    np.testing.assert_array_equal(
        batch["actions"][..., 3:9], raw["action_dict/rel_rot_6d"][flat]
    )  # not normalised: raw values
    ds.close()


def test_min_max_of_a_constant_dimension_is_not_divided_by_zero(tmp_path):
    path = tmp_path / "const.hdf5"
    with DatasetWriter(path, env_meta=LIFT_ENV) as w:
        for n in (5, 7):
            acts = np.random.default_rng(n).uniform(-1, 1, (n, 3))
            acts[:, 1] = 0.25
            w.add_demo(actions=acts, obs={"x": np.zeros((n, 2), np.float32)}, derive_next_obs=True)
    ds = SequenceDataset(path, ["x"], action_config={"actions": {"normalization": "min_max"}})
    st = ds.get_action_normalization_stats()["actions"]
    assert st["scale"][0, 1] == 1.0 and st["offset"][0, 1] == np.float32(0.25)
    assert np.isfinite(ds.get_batch(np.arange(len(ds)))["actions"]).all()


def test_default_actions_are_raw_float32_and_bad_config_is_refused(image_file):
    ds = SequenceDataset(image_file, ["object"], seq_length=3)
    batch = ds.get_batch([0, 5])
    flat = ds._index.windows(np.array([0, 5])).flat
    raw = read_all(image_file, ds.demos, "actions")
    assert batch["actions"].dtype == np.float32
    np.testing.assert_array_equal(batch["actions"], raw[flat].astype(np.float32))
    st = ds.get_action_normalization_stats()
    np.testing.assert_array_equal(st["actions"]["scale"], np.ones((1, 7), np.float32))
    with pytest.raises(ConfigError, match="normalization"):
        SequenceDataset(image_file, ["object"], action_config={"actions": {"normalization": "l2"}})
    with pytest.raises(ConfigError, match="cache_mode"):
        SequenceDataset(image_file, ["object"], cache_mode="everything")
    with pytest.raises(ConfigError, match="load_next_obs"):
        SequenceDataset(image_file, ["object"], goal_mode="last", load_next_obs=False)
    with pytest.raises(LayoutError, match="no observation 'nope'"):
        SequenceDataset(image_file, ["object", "nope"])


def test_demo_limit_keeps_the_first_demos_in_numeric_order(tmp_path):
    path = write_dataset(
        tmp_path / "many.hdf5",
        n_demos=12,
        filter_keys={"odd": [f"demo_{i}" for i in (11, 3, 1, 9, 5)]},
    )
    ds = SequenceDataset(path, ["object"], demo_limit=3, seq_length=5)
    assert ds.demos == ["demo_0", "demo_1", "demo_2"]
    full = SequenceDataset(path, ["object"], seq_length=5)
    assert len(ds) == sum(full.demo_lengths[d] for d in ds.demos)
    assert_tree_equal(
        {k: v for k, v in ds.get_batch(np.arange(len(ds))).items()},
        full.get_batch(np.arange(len(ds))),
    )
    limited = SequenceDataset(path, ["object"], demo_limit=2, filter_key="odd")
    assert limited.demos == ["demo_1", "demo_3"]
    with pytest.raises(ConfigError):
        SequenceDataset(path, ["object"], demo_limit=0)


# ---------------------------------------------------------------------------- images
def test_chw_float_images_equal_robomimic_process_frame(image_file):
    from robomimic.utils.obs_utils import process_frame

    common = dict(frame_stack=2, seq_length=3, goal_mode="last")
    hwc = SequenceDataset(image_file, OBS_KEYS, **common)
    chw = SequenceDataset(image_file, OBS_KEYS, image_format="chw_float", **common)
    a, b = hwc.get_batch(np.arange(len(hwc))), chw.get_batch(np.arange(len(chw)))
    for group in ("obs", "next_obs", "goal_obs"):
        for key in IMAGE_KEYS:
            expected = process_frame(a[group][key].copy(), channel_dim=3, scale=255.0)
            assert b[group][key].dtype == np.float32
            np.testing.assert_array_equal(b[group][key], expected)
        np.testing.assert_array_equal(b[group]["object"], a[group]["object"])


def write_layouts(path) -> list[str]:
    """Arrays stored every way HDF5 allows: contiguous, chunked by 4 frames, compressed, big-endian."""
    rng = np.random.default_rng(7)
    lz4 = dict(hdf5plugin.LZ4())
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(LIFT_ENV)
        total = 0
        for d, n in enumerate((9, 14, 6)):
            g = data.create_group(f"demo_{d}")
            g.attrs["num_samples"] = n
            g.create_dataset("actions", data=rng.uniform(-1, 1, (n, 4)))
            for grp in ("obs", "next_obs"):
                o = g.create_group(grp)
                img = rng.integers(0, 256, (n, 12, 10, 3), dtype=np.uint8)
                o.create_dataset("contig_image", data=img)
                o.create_dataset("chunk4_image", data=img, chunks=(4, 12, 10, 3))
                o.create_dataset("gzip_image", data=img, chunks=(1, 12, 10, 3), compression="gzip")
                o.create_dataset("lz4_image", data=img, chunks=(2, 12, 10, 3), **lz4)
                o.create_dataset("depth", data=rng.random((n, 12, 10, 1), dtype=np.float32))
                o.create_dataset("bigendian", data=rng.standard_normal((n, 5)).astype(">f4"))
                o.create_dataset("chunked_low", data=rng.standard_normal((n, 3)), chunks=(5, 3))
            total += n
        data.attrs["total"] = total
    return [
        "contig_image",
        "chunk4_image",
        "gzip_image",
        "lz4_image",
        "depth",
        "bigendian",
        "chunked_low",
    ]


def test_every_storage_layout_reads_the_same_from_file_and_ram(tmp_path):
    path = str(tmp_path / "layouts.hdf5")
    keys = write_layouts(path)
    common = dict(frame_stack=3, seq_length=4, get_pad_mask=True, goal_mode="last")
    ram = SequenceDataset(path, keys, cache_mode="all", **common)
    disk = SequenceDataset(path, keys, cache_mode=None, **common)
    ids = np.arange(len(ram))
    assert_tree_equal(disk.get_batch(ids), ram.get_batch(ids))
    # ram is the file: check a few windows against h5py slices directly
    with h5py.File(path, "r") as f:
        ref = {k: np.concatenate([f[f"data/demo_{d}/obs/{k}"][()] for d in range(3)]) for k in keys}
    flat = ram._index.windows(ids).flat
    batch = ram.get_batch(ids)
    for k in keys:
        np.testing.assert_array_equal(batch["obs"][k], ref[k][flat])
    # uncompressed arrays are read by byte offset, compressed ones through h5py
    by_offset = {k: bool((disk._layout.arrays[f"obs/{k}"].offsets >= 0).all()) for k in keys}
    assert by_offset == {
        "contig_image": True,
        "chunk4_image": True,
        "gzip_image": False,
        "lz4_image": False,
        "depth": True,
        "bigendian": False,
        "chunked_low": True,
    }
    # low_dim mode keeps (H, W, C) arrays (images and depth) in the file, the rest in RAM
    low = SequenceDataset(path, keys, cache_mode="low_dim", **common)
    kinds = {k: type(low._layout.arrays[f"obs/{k}"]) for k in keys}
    assert kinds["depth"] is FileArray and kinds["gzip_image"] is FileArray
    assert (
        low._layout.arrays["obs/bigendian"].cached and low._layout.arrays["obs/chunked_low"].cached
    )
    assert_tree_equal(low.get_batch(ids), ram.get_batch(ids))


def test_a_replaced_file_is_refused(tmp_path, image_file):
    ds = SequenceDataset(image_file, ["object", "agentview_image"], cache_mode=None)
    ds.get_batch([0])
    ds.close()
    os.replace(
        write_dataset(tmp_path / "other.hdf5", n_demos=5, cameras=("agentview",)), image_file
    )
    with pytest.raises(LayoutError, match="replaced"):
        ds.get_batch([0])
    with pytest.raises(LayoutError, match="replaced"):
        ds.refresh()


# ---------------------------------------------------------------------------- batches
def test_getitems_works_with_default_collate_and_with_collate(image_file):
    from torch.utils.data import default_collate

    ds = SequenceDataset(
        image_file, OBS_KEYS, frame_stack=2, seq_length=3, get_pad_mask=True, goal_mode="last"
    )
    batch = ds.__getitems__([3, 0, 7])
    assert isinstance(batch, SampleBatch) and len(batch) == 3
    assert batch[1]["index"] == 0
    fast = collate(batch)
    slow = default_collate(batch)
    assert_tree_equal(
        {k: v for k, v in _numpy(fast).items()}, {k: v for k, v in _numpy(slow).items()}
    )
    assert_tree_equal(_numpy(fast), ds.get_batch([3, 0, 7]))
    with pytest.raises(IndexError):
        ds.get_batch([len(ds)])
    assert ds[-1]["index"] == len(ds) - 1
    assert ds.get_batch([0, -len(ds), -1, 2])["index"].tolist() == [0, 0, len(ds) - 1, 2]
    with pytest.raises(IndexError):
        ds.get_batch([0, -len(ds) - 1])


def _numpy(tree):
    return {k: (_numpy(v) if isinstance(v, dict) else v.numpy()) for k, v in tree.items()}


# ---------------------------------------------------------------------------- stats cache
def test_stats_are_cached_beside_the_file_and_recomputed_when_it_changes(tmp_path, monkeypatch):
    path = write_dataset(tmp_path / "s.hdf5", n_demos=4, stats=False)  # none stored in the file
    calls = []
    real = stats.compute_moments

    def counting(arrays):
        calls.append(1)
        return real(arrays)

    monkeypatch.setattr(stats, "compute_moments", counting)
    config = dict(normalize_obs=True, action_config={"actions": {"normalization": "gaussian"}})
    first = SequenceDataset(path, ["robot0_eef_pos", "object"], **config)
    assert len(calls) == 3  # two obs keys and the actions
    assert os.path.exists(tmp_path / ".s.hdf5.demoset-stats.json")
    second = SequenceDataset(path, ["robot0_eef_pos", "object"], **config)
    assert len(calls) == 3  # nothing recomputed
    assert_tree_equal(second.get_obs_normalization_stats(), first.get_obs_normalization_stats())
    assert_tree_equal(
        second.get_action_normalization_stats(), first.get_action_normalization_stats()
    )
    # another selection of demos is another entry
    SequenceDataset(path, ["object"], normalize_obs=True, demo_limit=2)
    assert len(calls) == 4
    first.close(), second.close()

    # change a value in place: same demos, same lengths, different content
    with h5py.File(path, "r+") as f:
        f["data/demo_0/obs/object"][0] = 100.0
    changed = SequenceDataset(path, ["object"], normalize_obs=True)
    assert len(calls) == 5
    expected = read_all(path, changed.demos, "obs/object").astype(np.float64)
    np.testing.assert_allclose(
        changed.get_obs_normalization_stats()["object"]["mean"][0], expected.mean(0), rtol=1e-6
    )
    np.testing.assert_allclose(
        changed.get_obs_normalization_stats()["object"]["std"][0], expected.std(0) + 1e-3, rtol=1e-6
    )
    # a corrupt cache file is ignored, not trusted
    (tmp_path / ".s.hdf5.demoset-stats.json").write_text("{not json")
    SequenceDataset(path, ["object"], normalize_obs=True)
    assert len(calls) == 6


def test_moments_are_exact():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 4)) * 3 + 5 for n in (1, 7, 300, 2)]
    stats.BLOCK_ELEMENTS, saved = 16, stats.BLOCK_ELEMENTS  # force many merged blocks
    try:
        m = stats.compute_moments(parts)
    finally:
        stats.BLOCK_ELEMENTS = saved
    allx = np.concatenate(parts)
    assert m.n == len(allx)
    np.testing.assert_allclose(m.mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.std, allx.std(0), rtol=1e-12)
    np.testing.assert_array_equal(m.min, allx.min(0))
    np.testing.assert_array_equal(m.max, allx.max(0))


# ---------------------------------------------------------------------------- memory
def test_caching_that_would_not_fit_is_refused_with_the_figure(image_file, monkeypatch):
    monkeypatch.setattr(demoset.memory, "available_bytes", lambda: 20_000)
    with pytest.raises(InsufficientMemoryError) as err:
        SequenceDataset(image_file, OBS_KEYS, cache_mode="all")
    text = str(err.value)
    assert "img.hdf5" in text and "needs" in text and "KB" in text
    assert "cache_mode='low_dim'" in text
    SequenceDataset(image_file, OBS_KEYS, cache_mode="low_dim").close()  # that one fits
    monkeypatch.setattr(demoset.memory, "available_bytes", lambda: 2_000)
    with pytest.raises(InsufficientMemoryError, match="cache_mode=None"):
        SequenceDataset(image_file, OBS_KEYS, cache_mode="low_dim")
    ds = SequenceDataset(image_file, OBS_KEYS, cache_mode=None)  # holds nothing: no check
    assert ds.cached_bytes == 0 and len(ds) > 0


def test_cached_bytes_are_the_selected_arrays(image_file):
    ds = SequenceDataset(
        image_file, OBS_KEYS, cache_mode="all", dataset_keys=("actions", "rewards")
    )
    frames, demos = int(sum(ds.demo_lengths.values())), ds.num_demos
    low_dim = 2 * (3 + 10) * 4 + (7 + 1) * 4
    # each camera's obs and next_obs are held once: a demo's frames and its final next obs
    images = 2 * (frames + demos) * 16 * 16 * 3
    assert ds.cached_bytes == frames * low_dim + images
    assert all(a._owner.is_shared() for a in ds._layout.arrays.values() if isinstance(a, RamArray))


# ---------------------------------------------------------------------------- MetaDataset
def test_meta_dataset_concatenates_and_shares_action_stats(tmp_path):
    a = write_dataset(tmp_path / "a.hdf5", n_demos=3, seed=1)
    b = write_dataset(tmp_path / "b.hdf5", n_demos=2, seed=2)
    config = dict(seq_length=3, action_config={"actions": {"normalization": "min_max"}})
    da, db = SequenceDataset(a, ["object"], **config), SequenceDataset(b, ["object"], **config)
    own_a = da.get_action_normalization_stats()
    meta = MetaDataset([da, db], weights=[1.0, 3.0])
    assert len(meta) == len(da) + len(db)
    both = np.concatenate(
        [read_all(a, da.demos, "actions"), read_all(b, db.demos, "actions")]
    ).astype(np.float32)
    st = meta.get_action_normalization_stats()["actions"]
    np.testing.assert_array_equal(
        st["offset"][0] + st["scale"][0] * np.float32(-0.999999), both.min(0)
    )
    assert not np.array_equal(st["scale"], own_a["actions"]["scale"])
    assert_tree_equal(db.get_action_normalization_stats(), meta.get_action_normalization_stats())

    ids = np.array([len(da) + 1, 0, len(meta) - 1, 2])
    batch = meta.get_batch(ids)
    np.testing.assert_array_equal(batch["index"], ids)
    part_b = db.get_batch([1, len(db) - 1])
    part_a = da.get_batch([0, 2])
    np.testing.assert_array_equal(batch["obs"]["object"][[0, 2]], part_b["obs"]["object"])
    np.testing.assert_array_equal(batch["actions"][[1, 3]], part_a["actions"])
    assert meta[len(da)]["index"] == len(da)

    # the sampler draws datasets by weight (1:3), samples uniformly within each
    sampler = meta.sampler(num_samples=40_000, seed=0)
    drawn = sampler.indices()
    share_b = np.mean(drawn >= len(da))
    assert abs(share_b - 0.75) < 0.01
    again = meta.sampler(num_samples=40_000, seed=0).indices()
    np.testing.assert_array_equal(drawn, again)
    ranks = [meta.sampler(num_samples=101, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) + len(ranks[1]) == 101
    with pytest.raises(ConfigError):
        MetaDataset([da, SequenceDataset(a, ["robot0_eef_pos"])])


# ---------------------------------------------------------------------------- refresh
def test_refresh_picks_up_demos_a_follow_mode_writer_appends(tmp_path):
    path = tmp_path / "live.hdf5"
    rng = np.random.default_rng(0)

    def demo(n):
        obs = {"object": rng.standard_normal((n, 10)).astype(np.float32)}
        obs["agentview_image"] = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
        return dict(actions=rng.uniform(-1, 1, (n, 7)), obs=obs, derive_next_obs=True)

    writer = DatasetWriter(path, env_meta=LIFT_ENV, swmr=True)
    for n in (9, 12):
        writer.add_demo(**demo(n))
    keys = ["object", "agentview_image"]
    ds = SequenceDataset(path, keys, seq_length=4, cache_mode="low_dim", swmr=True)
    assert len(ds) == 21 and ds.refresh() == 0
    ds.get_batch(np.arange(len(ds)))  # reading images from the file between commits
    for n in (7, 10):
        writer.add_demo(**demo(n))
    assert ds.refresh() == 2
    assert ds.demos == ["demo_0", "demo_1", "demo_2", "demo_3"] and len(ds) == 38
    writer.close()
    fresh = SequenceDataset(path, keys, seq_length=4, cache_mode="low_dim")
    assert_tree_equal(ds.get_batch(np.arange(38)), fresh.get_batch(np.arange(38)))


def test_refresh_while_a_writer_process_appends(tmp_path):
    """A writer in another process keeps committing while the loader reads and refreshes."""
    path = tmp_path / "live.hdf5"
    write_dataset(path, n_demos=2, cameras=("agentview",))
    script = textwrap.dedent(
        f"""
        import time, numpy as np
        from demoset.format import DatasetWriter
        rng = np.random.default_rng(1)
        with DatasetWriter({str(path)!r}, mode="a", swmr=True, lock_timeout=10) as w:
            for i in range(6):
                n = int(rng.integers(8, 15))
                obs = {{"robot0_eef_pos": rng.standard_normal((n, 3)).astype(np.float32),
                       "object": rng.standard_normal((n, 10)).astype(np.float32),
                       "agentview_image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)}}
                w.add_demo(actions=rng.uniform(-1, 1, (n, 7)), obs=obs, derive_next_obs=True)
                time.sleep(0.05)
        print("done")
        """
    )
    keys = ["object", "agentview_image"]
    ds = SequenceDataset(path, keys, seq_length=3, cache_mode="low_dim", swmr=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    added = 0
    while proc.poll() is None:
        added += ds.refresh()
        ds.get_batch(np.arange(len(ds)))
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    added += ds.refresh()
    assert added == 6 and ds.num_demos == 8
    fresh = SequenceDataset(path, keys, seq_length=3, cache_mode="low_dim")
    assert fresh.demos == ds.demos
    assert_tree_equal(ds.get_batch(np.arange(len(ds))), fresh.get_batch(np.arange(len(fresh))))


def test_worker_batches_are_built_in_shared_memory(image_file):
    """Inside a DataLoader worker big arrays go to the main process by handle, not by copy."""
    ds = SequenceDataset(image_file, OBS_KEYS, seq_length=10, cache_mode="all")
    ids = np.arange(20)
    registry: dict = {}
    data = ds._get_batch(ids, registry)
    batch = collate(SampleBatch(data, len(ids), registry))
    assert batch["obs"]["agentview_image"].is_shared()  # 20 x 10 x 16 x 16 x 3 bytes
    assert not batch["obs"]["object"].is_shared()  # small arrays are not worth it
    assert_tree_equal(_numpy(batch), ds.get_batch(ids))


# ---------------------------------------------------------------------------- obs/next_obs held once
def pair_demo(rng, n: int, follows_rule: bool) -> dict:
    """A demo whose next_obs is obs one step on, or (follows_rule False) new random frames."""
    obs = {
        "object": rng.standard_normal((n, 10)).astype(np.float32),
        "agentview_image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
    }
    demo = dict(actions=rng.uniform(-1, 1, (n, 7)), obs=obs)
    if follows_rule:
        return {**demo, "derive_next_obs": True, "final_obs": {k: v[0] for k, v in obs.items()}}
    nxt = {k: np.roll(v, -2, axis=0) for k, v in obs.items()}  # two steps on: breaks the rule
    return {**demo, "next_obs": nxt}


PAIR_KEYS = ["object", "agentview_image"]
PAIR_WINDOWS = dict(frame_stack=2, seq_length=4, get_pad_mask=True, goal_mode="last")


def write_pair_file(path, rules: list[bool], swmr: bool = False, close: bool = True):
    rng = np.random.default_rng(len(rules))
    writer = DatasetWriter(path, env_meta=LIFT_ENV, swmr=swmr, overwrite=True)
    for follows in rules:
        writer.add_demo(**pair_demo(rng, int(rng.integers(6, 15)), follows))
    if close:
        writer.close()
    return writer


@pytest.mark.parametrize("frame_stack,seq_length", [(1, 1), (1, 10), (3, 1), (3, 10)])
def test_windows_say_they_are_padded_exactly_when_a_position_is_padded(
    image_file, frame_stack, seq_length
):
    ds = SequenceDataset(
        image_file, ["object"], frame_stack=frame_stack, seq_length=seq_length, cache_mode="all"
    )
    ids = np.arange(len(ds))
    for batch in [[int(i)] for i in ids] + [ids[:7], ids[3:40], ids]:
        win = ds._index.windows(np.asarray(batch, dtype=np.int64))
        assert win.padded == bool(win.padded_windows) == (not win.valid.all())
        padded_rows = {b for b, _, _ in win.padded_windows}
        assert padded_rows == set(np.flatnonzero(~win.valid.all(axis=1)).tolist())
        # filling a window read as its real steps gives the clipped frames
        rows = np.zeros(win.flat.shape, dtype=np.int64)
        for b in range(win.size):
            real = win.flat[b][win.valid[b]]
            rows[b, win.pad_front[b] : win.pad_front[b] + len(real)] = real
        fill_padding(rows[..., None], win)
        np.testing.assert_array_equal(rows, win.flat)


@pytest.mark.parametrize("pad_frame_stack", [True, False])
@pytest.mark.parametrize("pad_seq_length", [True, False])
@pytest.mark.parametrize("frame_stack,seq_length", [(1, 1), (1, 4), (3, 1), (3, 4)])
def test_window_frames_follow_robomimic_rule_and_survive_pickling(
    frame_stack, seq_length, pad_frame_stack, pad_seq_length
):
    lengths = [7, 9, 6, 12]
    index = WindowIndex(lengths, frame_stack, seq_length, pad_frame_stack, pad_seq_length)
    # the rule, one sample at a time: anchors, then steps clipped into the demo
    history, start, expected = frame_stack - 1, 0, []
    for length in lengths:
        first = 0 if pad_frame_stack else history
        last = length - 1 if pad_seq_length else length - seq_length
        for anchor in range(first, last + 1):
            steps = np.arange(anchor - history, anchor + seq_length)
            expected.append(
                (start + np.clip(steps, 0, length - 1), (steps >= 0) & (steps < length))
            )
        start += length
    assert len(index) == len(expected)

    copy = pickle.loads(pickle.dumps(index))
    # the sliding tables travel as their positions, not as one row per window (10x here)
    big = WindowIndex([150] * 20, frame_stack, 10, pad_frame_stack, pad_seq_length)
    assert len(pickle.dumps(big)) < 5 * big._position_frames.nbytes
    for idx in (index, copy):
        win = idx.windows(np.arange(len(idx)))
        assert np.array_equal(win.flat, np.stack([f for f, _ in expected]))
        assert np.array_equal(win.valid, np.stack([v for _, v in expected]))
        first_real = win.flat[np.arange(win.size), win.pad_front]
        assert np.array_equal(first_real, idx.starts[win.demo] + win.begin)
        assert np.array_equal(win.end - win.begin, win.valid.sum(axis=1))


def test_obs_and_next_obs_images_are_held_once_while_next_obs_is_obs_one_step_on(
    tmp_path, monkeypatch
):
    path = tmp_path / "pair.hdf5"
    write_pair_file(path, [True] * 5)
    ram = SequenceDataset(path, PAIR_KEYS, cache_mode="all", **PAIR_WINDOWS)
    disk = SequenceDataset(path, PAIR_KEYS, cache_mode=None, **PAIR_WINDOWS)
    ids = np.arange(len(ram))
    assert_tree_equal(ram.get_batch(ids), disk.get_batch(ids))
    [(pair, _, _)] = ram._layout.pairs
    assert pair.split is None
    frames = int(sum(ram.demo_lengths.values()))
    assert pair.nbytes == (frames + ram.num_demos) * 16 * 16 * 3  # not 2 * frames
    # a batch without padding: obs and next_obs are views of one block, the same values
    win = ram._index.windows(ids)
    clean = ids[win.valid.all(axis=1)][:6]
    batch = ram.get_batch(clean)
    obs, nxt = batch["obs"]["agentview_image"], batch["next_obs"]["agentview_image"]
    assert np.shares_memory(obs, nxt)
    assert_tree_equal(batch, disk.get_batch(clean))
    # in a DataLoader worker the block is built in shared memory and both go by handle
    monkeypatch.setattr(demoset.loader.alloc, "SHARED_OUTPUT_MIN_BYTES", 1)
    registry: dict = {}
    data = ram._get_batch(clean, registry)
    tensors = collate(SampleBatch(data, len(clean), registry))
    assert tensors["obs"]["agentview_image"].is_shared()
    assert tensors["next_obs"]["agentview_image"].is_shared()
    assert_tree_equal(_numpy(tensors), disk.get_batch(clean))
    # next_obs_views=False: separate memory, the same values
    apart = SequenceDataset(path, PAIR_KEYS, cache_mode="all", next_obs_views=False, **PAIR_WINDOWS)
    batch = apart.get_batch(clean)
    assert not np.shares_memory(
        batch["obs"]["agentview_image"], batch["next_obs"]["agentview_image"]
    )
    assert_tree_equal(batch, disk.get_batch(clean))


@pytest.mark.parametrize("breaking", [0, 3])
def test_a_demo_that_breaks_the_rule_gets_separate_arrays(tmp_path, breaking):
    path = tmp_path / "mixed.hdf5"
    rules = [True] * 5
    rules[breaking] = False
    write_pair_file(path, rules)
    ram = SequenceDataset(path, PAIR_KEYS, cache_mode="all", **PAIR_WINDOWS)
    disk = SequenceDataset(path, PAIR_KEYS, cache_mode=None, **PAIR_WINDOWS)
    ids = np.arange(len(ram))
    assert_tree_equal(ram.get_batch(ids), disk.get_batch(ids))
    [(pair, _, _)] = ram._layout.pairs
    frames = int(sum(ram.demo_lengths.values()))
    assert pair.split is not None and pair.nbytes == 2 * frames * 16 * 16 * 3


def test_refresh_with_a_demo_that_breaks_the_rule(tmp_path):
    """A follow-mode reader holding obs once turns to separate arrays when an appended
    demo's next_obs is not obs one step on, and keeps giving the file's values."""
    path = tmp_path / "live.hdf5"
    writer = write_pair_file(path, [True] * 3, swmr=True, close=False)
    ds = SequenceDataset(path, PAIR_KEYS, cache_mode="all", swmr=True, **PAIR_WINDOWS)
    [(pair, _, _)] = ds._layout.pairs
    assert pair.split is None
    rng = np.random.default_rng(7)
    writer.add_demo(**pair_demo(rng, 9, True))
    assert ds.refresh() == 1 and pair.split is None
    writer.add_demo(**pair_demo(rng, 11, False))
    writer.add_demo(**pair_demo(rng, 7, True))
    assert ds.refresh() == 2 and pair.split is not None
    writer.close()
    disk = SequenceDataset(path, PAIR_KEYS, cache_mode=None, **PAIR_WINDOWS)
    ids = np.arange(len(disk))
    assert len(ds) == len(disk)
    assert_tree_equal(ds.get_batch(ids), disk.get_batch(ids))


@pytest.mark.parametrize("cache_mode", ["low_dim", None])
@pytest.mark.parametrize("breaking", [None, 0, 3])
def test_file_reads_of_obs_and_next_obs_match_the_file(tmp_path, cache_mode, breaking):
    """Read from the file, a window's next_obs comes from its obs block only in demos that
    follow the rule (found out per demo on first use); every window equals the file's."""
    from demoset.loader.file_pair import BREAKS, FOLLOWS

    path = tmp_path / "file_pair.hdf5"
    rules = [True] * 5
    if breaking is not None:
        rules[breaking] = False
    write_pair_file(path, rules)
    ds = SequenceDataset(path, PAIR_KEYS, cache_mode=cache_mode, seq_length=4)
    key = "agentview_image"
    [(pair, _, _)] = [p for p in ds._layout.pairs if p[1] == f"obs/{key}"]
    obs_ref = read_all(path, ds.demos, f"obs/{key}")
    next_ref = read_all(path, ds.demos, f"next_obs/{key}")
    ids = np.arange(len(ds))
    win = ds._index.windows(ids)
    clean = ids[win.valid.all(axis=1)]
    for batch_ids in ([int(i)] for i in ids):  # one window a batch: most without padding
        batch = ds.get_batch(batch_ids)
        flat = ds._index.windows(np.asarray(batch_ids)).flat
        np.testing.assert_array_equal(batch["obs"][key], obs_ref[flat])
        np.testing.assert_array_equal(batch["next_obs"][key], next_ref[flat])
    batch = ds.get_batch(ids)  # with padding: two reads
    np.testing.assert_array_equal(batch["next_obs"][key], next_ref[win.flat])
    expected = [FOLLOWS if rule else BREAKS for rule in rules]
    assert pair.rule.tolist() == expected
    following = clean[np.asarray(expected)[win.demo[clean]] == FOLLOWS][:5]
    batch = ds.get_batch(following)
    assert np.shares_memory(batch["obs"][key], batch["next_obs"][key])
    np.testing.assert_array_equal(
        batch["next_obs"][key], next_ref[ds._index.windows(following).flat]
    )
