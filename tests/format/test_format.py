"""The format layer: DemoFile reads what DatasetWriter wrote, in the robomimic layout."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from demoset.errors import (
    DemoNotFoundError,
    FileAccessError,
    FilterKeyError,
    LayoutError,
    WriteError,
)
from demoset.format import DatasetWriter, derive_next_obs, open_dataset, parse_env_args
from demoset.format.constants import sorted_demos

ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}}


def test_numeric_demo_order():
    assert sorted_demos(["demo_10", "demo_2", "demo_1", b"demo_0"]) == [
        "demo_0",
        "demo_1",
        "demo_2",
        "demo_10",
    ]


def test_roundtrip_every_array(tmp_path):
    path = tmp_path / "d.hdf5"
    rng = np.random.default_rng(1)
    written = []
    with DatasetWriter(path, env_meta=ENV) as w:
        for i in range(12):
            n = 3 + i
            demo = {
                "actions": rng.uniform(-1, 1, (n, 4)),
                "obs": {
                    "pos": rng.standard_normal((n, 3)),
                    "cam_image": rng.integers(0, 255, (n, 6, 5, 3), dtype=np.uint8),
                },
                "rewards": rng.random(n),
                "dones": np.eye(1, n, n - 1, dtype=np.int64)[0],
                "states": rng.standard_normal((n, 9)),
                "action_dict": {"abs_pos": rng.standard_normal((n, 3))},
            }
            name = w.add_demo(
                **demo, derive_next_obs=True, model_file="<xml/>", ep_meta={"lang": "lift"}
            )
            written.append((name, demo))
        w.set_filter_key("train", ["demo_10", "demo_2"])
    with open_dataset(path) as df:
        assert df.demos == [f"demo_{i}" for i in range(12)]
        assert df.total == sum(3 + i for i in range(12))
        assert df.env_meta.env_name == "Lift" and df.env_meta.env_type == 1
        assert df.filter_keys == ["train"]
        assert df.demos_for("train") == ["demo_2", "demo_10"]
        assert df.obs_keys()["cam_image"].shape == (6, 5, 3) and df.obs_keys()["cam_image"].is_image
        assert df.action_dict_keys()["abs_pos"].shape == (3,)
        for name, demo in written:
            assert df.num_samples(name) == len(demo["actions"])
            np.testing.assert_array_equal(df.read(name, "actions"), demo["actions"])
            np.testing.assert_array_equal(df.read(name, "states"), demo["states"])
            np.testing.assert_array_equal(df.read(name, "rewards"), demo["rewards"])
            np.testing.assert_array_equal(df.read(name, "obs/cam_image"), demo["obs"]["cam_image"])
            np.testing.assert_array_equal(
                df.read(name, "action_dict/abs_pos"), demo["action_dict"]["abs_pos"]
            )
            np.testing.assert_array_equal(
                df.read(name, "next_obs/pos")[:-1], demo["obs"]["pos"][1:]
            )
            np.testing.assert_array_equal(df.read(name, "next_obs/pos")[-1], demo["obs"]["pos"][-1])
            assert df.demo_attrs(name)["model_file"] == "<xml/>"
            assert json.loads(df.demo_attrs(name)["ep_meta"]) == {"lang": "lift"}
        np.testing.assert_array_equal(
            df.read("demo_5", "actions", 2, 4), written[5][1]["actions"][2:4]
        )
    with h5py.File(path, "r") as f:
        assert json.loads(f["data"].attrs["env_args"])["type"] == 1
        assert "demoset_staging" not in f


def test_derive_next_obs_with_final_obs():
    obs = {"x": np.arange(4.0)[:, None]}
    nxt = derive_next_obs(obs, final_obs={"x": np.array([9.0])})
    np.testing.assert_array_equal(nxt["x"][:, 0], [1, 2, 3, 9])


@pytest.mark.parametrize("compression", ["gzip", "lzf", "lz4", "blosc"])
def test_image_storage_options(tmp_path, compression):
    path = tmp_path / "img.hdf5"
    frames = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    with DatasetWriter(path, env_meta=ENV, image_compression=compression) as w:
        w.add_demo(np.zeros((5, 2)), obs={"agentview_image": frames, "low": np.zeros((5, 2))})
    with h5py.File(path, "r") as f:
        dset = f["data/demo_0/obs/agentview_image"]
        assert dset.chunks == (1, 8, 8, 3)
        assert f["data/demo_0/obs/low"].chunks is None
    with open_dataset(path) as df:
        np.testing.assert_array_equal(df.read("demo_0", "obs/agentview_image"), frames)


def test_writer_checks_before_writing(tmp_path):
    path = tmp_path / "w.hdf5"
    with DatasetWriter(path, env_meta=ENV) as w:
        with pytest.raises(WriteError, match="obs/pos has length 4, expected 5"):
            w.add_demo(np.zeros((5, 2)), obs={"pos": np.zeros((4, 3))})
        with pytest.raises(WriteError, match="next_obs keys"):
            w.add_demo(
                np.zeros((5, 2)),
                obs={"pos": np.zeros((5, 3))},
                next_obs={"other": np.zeros((5, 3))},
            )
        with pytest.raises(WriteError, match="shape"):
            w.add_demo(
                np.zeros((5, 2)), obs={"pos": np.zeros((5, 3))}, next_obs={"pos": np.zeros((5, 2))}
            )
        with pytest.raises(WriteError, match="rewards"):
            w.add_demo(np.zeros((5, 2)), rewards=np.zeros((5, 2)))
        w.add_demo(np.zeros((5, 2)))
    with open_dataset(path) as df:
        assert df.demos == ["demo_0"] and df.total == 5


def test_writer_refuses_existing_and_appends(tmp_path):
    path = tmp_path / "a.hdf5"
    with DatasetWriter(path, env_meta=ENV) as w:
        w.add_demo(np.zeros((3, 2)))
    with pytest.raises(WriteError, match="file exists"):
        DatasetWriter(path, env_meta=ENV)
    with DatasetWriter(path, mode="a") as w:
        assert w.add_demo(np.zeros((4, 2))) == "demo_1"
    with open_dataset(path) as df:
        assert df.demos == ["demo_0", "demo_1"] and df.total == 7


def test_atomic_writer_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "out.hdf5"
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, env_meta=ENV, atomic=True) as w:
            w.add_demo(np.zeros((3, 2)))
            assert not path.exists()
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_second_writer_refused_and_reader_follows(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.hdf5"
    reader_code = (
        "import sys, time\n"
        "from demoset.format import open_dataset\n"
        "df = open_dataset(sys.argv[1], swmr=True)\n"
        "print(len(df.demos), flush=True)\n"
        "sys.stdin.readline()\n"
        "print(df.refresh(), flush=True)\n"
    )
    with DatasetWriter(path, env_meta=ENV, swmr=True) as w:
        w.add_demo(np.zeros((3, 2)))
        with pytest.raises(WriteError, match="another demoset writer"):
            DatasetWriter(path, mode="a")
        reader = subprocess.Popen(
            [sys.executable, "-c", reader_code, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout.readline().strip() == "1"
        w.add_demo(np.zeros((3, 2)))  # the reader keeps the file open; the writer is not blocked
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "['demo_1']"
        assert reader.wait(timeout=30) == 0


def test_env_type_accepted_under_either_name():
    assert (
        parse_env_args(json.dumps({"env_name": "X", "env_type": 2, "env_kwargs": {}})).env_type == 2
    )
    assert parse_env_args(json.dumps({"env_name": "X", "type": 3, "env_kwargs": {}})).env_type == 3
    with pytest.raises(LayoutError, match="not JSON"):
        parse_env_args("{not json", "f.hdf5")
    with pytest.raises(LayoutError, match="lacks env_kwargs"):
        parse_env_args(json.dumps({"env_name": "X", "type": 1}), "f.hdf5")


def test_open_errors_are_one_line(tmp_path):
    with pytest.raises(FileAccessError, match="no such file"):
        open_dataset(tmp_path / "missing.hdf5")
    text = tmp_path / "text.hdf5"
    text.write_text("hello")
    with pytest.raises(FileAccessError, match="not an HDF5 file"):
        open_dataset(text)
    empty = tmp_path / "empty.hdf5"
    h5py.File(empty, "w").close()
    with pytest.raises(LayoutError, match="no 'data' group") as err:
        open_dataset(empty)
    assert str(empty) in str(err.value) and "/data" in str(err.value)


def test_unknown_demo_and_filter_key(make_dataset):
    path = make_dataset(n_demos=2)
    with open_dataset(path) as df:
        with pytest.raises(DemoNotFoundError, match="demo_7"):
            df.read("demo_7", "actions")
        with pytest.raises(FilterKeyError, match="no filter key 'nope'"):
            df.demos_for("nope")
        with pytest.raises(LayoutError, match="no array"):
            df.read("demo_0", "obs/missing")


def test_external_links_refused(tmp_path, make_dataset):
    from demoset.errors import UnsafeFileError

    path = make_dataset(n_demos=1)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f["secret"] = np.arange(3)
    with h5py.File(path, "a") as f:
        f["data/demo_0/obs/linked"] = h5py.ExternalLink(str(other), "/secret")
    with open_dataset(path) as df:
        with pytest.raises(UnsafeFileError, match="external link"):
            df.obs_keys()
