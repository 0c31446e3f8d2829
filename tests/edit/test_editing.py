"""`demoset edit`: every edit writes a new, valid file and leaves the source as it was."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.editing import (
    add_key,
    drop_key,
    relabel,
    remove_demos,
    rename_key,
    select_demos,
    set_meta,
    trim_demos,
)
from demoset.editing.demos import idle_run
from demoset.errors import ConfigError, DemoNotFoundError, LayoutError
from demoset.format import DatasetWriter, open_dataset, validate

from tests.helpers import LIFT_ENV, write_dataset

SPLIT = {"train": ["demo_0", "demo_1", "demo_2", "demo_3"], "valid": ["demo_4", "demo_5"]}


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def source(tmp_path):
    return write_dataset(
        tmp_path / "src.hdf5",
        n_demos=6,
        cameras=("agentview",),
        image_compression="gzip",
        filter_keys=SPLIT,
    )


def assert_clean(path):
    errors = [f for f in validate(path) if f.level == "error"]
    assert errors == []
    with open_dataset(path) as df:
        total = 0
        for d in df.demos:
            n = df.num_samples(d)
            total += n
            for key in df.array_keys(d):
                if df.dataset(d, key).shape[0] != 0 and key.split("/")[0] in (
                    "obs",
                    "next_obs",
                    "actions",
                    "rewards",
                    "dones",
                    "states",
                ):
                    assert df.dataset(d, key).shape[0] == n, (d, key)
        assert df.total == total


def test_remove_demos_by_name_key_and_condition(source, tmp_path):
    before = digest(source)
    with open_dataset(source) as df:
        lengths = dict(zip(df.demos, df.lengths().tolist()))
    cut = sorted(lengths.values())[2]
    chosen = select_demos(source, demos=["demo_1"], shorter_than=cut)
    expected = {"demo_1"} | {d for d, n in lengths.items() if n < cut}
    assert set(chosen) == expected
    out = tmp_path / "out.hdf5"
    result = remove_demos(source, out, chosen)
    assert digest(source) == before
    assert_clean(out)
    with open_dataset(out) as df, open_dataset(source) as src:
        assert df.demos == [d for d in src.demos if d not in expected]
        for d in df.demos:
            np.testing.assert_array_equal(
                df.read(d, "obs/agentview_image"), src.read(d, "obs/agentview_image")
            )
        assert df.filter_key_demos("train") == [d for d in SPLIT["train"] if d not in expected]
    assert result.removed == chosen
    # removing a whole filter key drops that key from the output
    out2 = tmp_path / "out2.hdf5"
    result = remove_demos(source, out2, select_demos(source, filter_key="valid"))
    assert result.dropped_filter_keys == ["valid"]
    with open_dataset(out2) as df:
        assert df.filter_keys == ["train"]
    with pytest.raises(ConfigError):
        remove_demos(source, tmp_path / "none.hdf5", select_demos(source, longer_than=0))
    assert not os.path.exists(tmp_path / "none.hdf5")


def test_no_success_reads_rewards(tmp_path):
    path = tmp_path / "s.hdf5"
    with DatasetWriter(path, env_meta=LIFT_ENV) as w:
        for i in range(3):
            rewards = np.zeros(5)
            if i != 1:
                rewards[-1] = 1.0
            w.add_demo(actions=np.zeros((5, 2)), obs={"x": np.zeros((5, 1))}, rewards=rewards)
    assert select_demos(path, no_success=True) == ["demo_1"]


def test_trim_counts_keep_arrays_paired_and_filters(source, tmp_path):
    out = tmp_path / "t.hdf5"
    result = trim_demos(source, out, start=2, end=1)
    assert_clean(out)
    with open_dataset(out) as df, open_dataset(source) as src:
        for d in df.demos:
            n = src.num_samples(d)
            assert df.num_samples(d) == n - 3
            for key in ("actions", "obs/agentview_image", "next_obs/object", "states"):
                np.testing.assert_array_equal(df.read(d, key), src.read(d, key)[2 : n - 1])
            # next_obs[t] is still obs[t + 1]
            np.testing.assert_array_equal(
                df.read(d, "next_obs/object")[:-1], df.read(d, "obs/object")[1:]
            )
            assert df.dataset(d, "obs/agentview_image").compression == "gzip"
        assert df.filter_key_demos("valid") == SPLIT["valid"]
    assert len(result.changed) == 6


def test_idle_frames_are_found_at_both_ends():
    moving = np.cumsum(np.ones((6, 2)), axis=0)
    actions = np.concatenate([np.zeros((3, 2)), moving, np.full((2, 2), 6.0)])
    assert idle_run(actions, None, 1e-9, from_end=False) == 2
    assert idle_run(actions, None, 1e-9, from_end=True) == 2
    state = np.arange(len(actions), dtype=float)[:, None]  # the state moves all along
    assert idle_run(actions, state, 1e-9, from_end=False) == 0


def test_trim_idle(tmp_path):
    path = tmp_path / "idle.hdf5"
    with DatasetWriter(path, env_meta=LIFT_ENV) as w:
        actions = np.concatenate([np.zeros((4, 2)), np.ones((5, 2)) * np.arange(5)[:, None]])
        states = np.concatenate([np.zeros((4, 3)), np.arange(15, dtype=float).reshape(5, 3) + 1])
        w.add_demo(actions=actions, obs={"x": states[:, :1]}, states=states, derive_next_obs=True)
    out = tmp_path / "idle_out.hdf5"
    trim_demos(path, out, idle_start=True)
    with open_dataset(out) as df:
        assert df.num_samples("demo_0") == 6  # 3 idle frames cut, the last still one kept
        np.testing.assert_array_equal(df.read("demo_0", "actions"), actions[3:])


def test_rename_and_drop_keys(source, tmp_path):
    out = tmp_path / "r.hdf5"
    rename_key(source, out, "object", "object_state")
    assert_clean(out)
    with open_dataset(out) as df, open_dataset(source) as src:
        assert "object_state" in df.obs_keys() and "object" not in df.obs_keys()
        assert "object_state" in df.next_obs_keys()
        np.testing.assert_array_equal(
            df.read("demo_2", "obs/object_state"), src.read("demo_2", "obs/object")
        )
    out2 = tmp_path / "d.hdf5"
    drop_key(source, out2, "agentview_image")
    assert_clean(out2)
    with open_dataset(out2) as df:
        assert (
            "agentview_image" not in df.obs_keys() and "agentview_image" not in df.next_obs_keys()
        )
    out3 = tmp_path / "d3.hdf5"
    drop_key(source, out3, "states", group="dataset")
    with open_dataset(out3) as df:
        assert not df.has("demo_0", "states")
    with pytest.raises(ConfigError):
        drop_key(source, tmp_path / "x.hdf5", "actions", group="dataset")
    with pytest.raises(LayoutError):
        rename_key(source, tmp_path / "x.hdf5", "nope", "other")
    with pytest.raises(LayoutError):
        rename_key(source, tmp_path / "x.hdf5", "object", "robot0_eef_pos")
    assert not os.path.exists(tmp_path / "x.hdf5")


def speed(arrays):
    return np.linalg.norm(arrays["robot0_eef_pos"], axis=1)


def test_add_key_computes_obs_and_next_obs(source, tmp_path):
    out = tmp_path / "a.hdf5"
    add_key(source, out, "eef_norm", speed)
    assert_clean(out)
    with open_dataset(out) as df:
        for d in df.demos:
            pos, nxt = df.read(d, "obs/robot0_eef_pos"), df.read(d, "next_obs/robot0_eef_pos")
            np.testing.assert_allclose(
                df.read(d, "obs/eef_norm")[:, 0], np.linalg.norm(pos, axis=1)
            )
            np.testing.assert_allclose(
                df.read(d, "next_obs/eef_norm")[:, 0], np.linalg.norm(nxt, axis=1)
            )


def test_add_key_from_module_and_a_failing_function(source, tmp_path, monkeypatch):
    (tmp_path / "userkeys.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def doubled(arrays):
                return arrays["object"] * 2

            def broken(arrays):
                if len(arrays["actions"]) > 0:
                    raise ValueError("no")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "m.hdf5"
    add_key(source, out, "object2", "userkeys:doubled")
    with open_dataset(out) as df:
        np.testing.assert_array_equal(
            df.read("demo_1", "obs/object2"), df.read("demo_1", "obs/object") * 2
        )
    before = digest(source)
    with pytest.raises(ConfigError, match="failed: ValueError"):
        add_key(source, tmp_path / "bad.hdf5", "b", "userkeys:broken")
    assert not os.path.exists(tmp_path / "bad.hdf5")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary left
    assert digest(source) == before
    with pytest.raises(ConfigError, match="module:function"):
        add_key(source, tmp_path / "bad.hdf5", "b", "nocolon")


def test_relabel_like_robomimic_done_modes(tmp_path):
    path = tmp_path / "l.hdf5"
    rewards = np.array([0.1, 0.5, 1.0, 1.0, 0.2])
    with DatasetWriter(path, env_meta=LIFT_ENV) as w:
        w.add_demo(actions=np.zeros((5, 2)), obs={"x": np.zeros((5, 1))}, rewards=rewards)
    expected = {
        "success": [0, 0, 1, 1, 0],
        "last": [0, 0, 0, 0, 1],
        "both": [0, 0, 1, 1, 1],
    }
    for mode, want in expected.items():
        out = tmp_path / f"{mode}.hdf5"
        relabel(path, out, rewards="sparse", dones=mode)
        with open_dataset(out) as df:
            np.testing.assert_array_equal(df.read("demo_0", "rewards"), [0, 0, 1, 1, 0])
            np.testing.assert_array_equal(df.read("demo_0", "dones"), want)
        assert_clean(out)


def test_set_meta_merges_json(source, tmp_path):
    out = tmp_path / "meta.hdf5"
    set_meta(source, out, values={"operator": "ann"}, lang="lift the cube", demos=["demo_0"])
    out2 = tmp_path / "meta2.hdf5"
    set_meta(out, out2, values={"scene": 3})
    with open_dataset(out2) as df:
        assert json.loads(df.demo_attrs("demo_0")["ep_meta"]) == {
            "operator": "ann",
            "lang": "lift the cube",
            "scene": 3,
        }
        assert json.loads(df.demo_attrs("demo_1")["ep_meta"]) == {"scene": 3}
    with pytest.raises(DemoNotFoundError):
        set_meta(source, tmp_path / "x.hdf5", lang="x", demos=["demo_99"])
    with h5py.File(source, "a") as h5:
        h5["data/demo_0"].attrs["ep_meta"] = "{not json"
    with pytest.raises(LayoutError, match="ep_meta is not JSON"):
        set_meta(source, tmp_path / "x.hdf5", lang="x")


def test_cli_edits_and_bad_input(source, tmp_path, capsys):
    out = str(tmp_path / "cli.hdf5")
    assert main(["edit", "trim", source, "--out", out, "--start", "1"]) == 0
    assert "6 demos" in capsys.readouterr().out
    assert (
        main(["edit", "remove-demos", source, "--out", out, "--demos", "demo_2", "--overwrite"])
        == 0
    )
    with open_dataset(out) as df:
        assert "demo_2" not in df.demos
    before = digest(source)
    code = main(["edit", "rename-key", source, "--out", str(tmp_path / "no.hdf5"), "missing", "x"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert source in err and "/data/demo_0/obs/missing" in err
    assert main(["edit", "trim", source, "--out", out, "--start", "1"]) == 2  # exists already
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "edit",
                "set-meta",
                source,
                "--out",
                str(tmp_path / "m.hdf5"),
                "--set",
                "a=[1, 2]",
                "--lang",
                "go",
            ]
        )
        == 0
    )
    with open_dataset(tmp_path / "m.hdf5") as df:
        assert json.loads(df.demo_attrs("demo_3")["ep_meta"]) == {"a": [1, 2], "lang": "go"}
    assert digest(source) == before
    assert not os.path.exists(tmp_path / "no.hdf5")


def test_robomimic_reads_an_edited_file(source, tmp_path):
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset as RobomimicDataset

    out = tmp_path / "rm.hdf5"
    trim_demos(source, out, start=1)
    ObsUtils.initialize_obs_utils_with_obs_specs(
        {"obs": {"low_dim": ["robot0_eef_pos", "object"], "rgb": []}}
    )
    ds = RobomimicDataset(
        hdf5_path=str(out),
        obs_keys=("robot0_eef_pos", "object"),
        dataset_keys=("actions",),
        seq_length=3,
        filter_by_attribute="train",
        hdf5_cache_mode="low_dim",
    )
    with open_dataset(out) as df:
        assert len(ds) == sum(df.num_samples(d) for d in df.filter_key_demos("train"))
    sample = ds[0]
    assert sample["actions"].shape == (3, 7)
