"""`demoset convert roboturk` on a task folder built in RoboTurk Pilot's layout.

The folder holds `demo.hdf5` (data.attrs["env"], demos demo_1..demo_K with states,
joint_velocities, gripper_actuations and a model_file attribute naming an XML) and a
`models/` folder, as the RoboTurk Pilot release does. Joint velocities go beyond [-1, 1]
on purpose so clipping is exercised and counted.
"""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.convert.roboturk_pilot import ROBOSUITE_V03_KWARGS, convert_roboturk_pilot
from demoset.errors import ConversionError
from demoset.format import open_dataset, validate
from demoset.masks import split_demos

LENGTHS = [30, 22, 41, 22, 35, 18, 27, 50, 22, 33, 19, 26]


def model_xml(k: int) -> str:
    return f"<mujoco model='bins_can_{k}'><worldbody><body name='b{k}'/></worldbody></mujoco>\n"


def make_task_folder(root, lengths=LENGTHS, seed=0, model_name=None) -> str:
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "bins-Can")
    os.makedirs(os.path.join(folder, "models"))
    with h5py.File(os.path.join(folder, "demo.hdf5"), "w") as f:
        data = f.create_group("data")
        data.attrs["env"] = "SawyerPickPlaceCan"
        data.attrs["date"] = "2018-10-01"
        data.attrs["repository_version"] = "0.3.0"
        for k, n in enumerate(lengths, start=1):
            grp = data.create_group(f"demo_{k}")
            grp["states"] = rng.standard_normal((n, 47))
            grp["joint_velocities"] = rng.uniform(-1.6, 1.6, (n, 7))
            grp["gripper_actuations"] = rng.uniform(-1.0, 1.0, (n, 1))
            grp["right_dpos"] = rng.standard_normal((n, 3))
            name = model_name or f"model_{k}.xml"
            grp.attrs["model_file"] = name
            with open(os.path.join(folder, "models", f"model_{k}.xml"), "w") as m:
                m.write(model_xml(k))
    return folder


def folder_fingerprint(folder) -> dict:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (
                    hashlib.sha256(f.read()).hexdigest(),
                    os.stat(path).st_mtime_ns,
                )
    return out


def test_converts_task_folder(tmp_path):
    folder = make_task_folder(tmp_path)
    before = folder_fingerprint(folder)
    out = tmp_path / "can.hdf5"
    result = convert_roboturk_pilot(folder, out, fastest_n=5)
    assert folder_fingerprint(folder) == before  # nothing renamed, added or changed

    expected_clipped = 0
    with h5py.File(os.path.join(folder, "demo.hdf5"), "r") as src, open_dataset(out) as df:
        assert df.demos == [f"demo_{k}" for k in range(1, len(LENGTHS) + 1)]
        for demo in df.demos:
            raw = np.concatenate(
                [
                    src[f"data/{demo}/joint_velocities"][()],
                    src[f"data/{demo}/gripper_actuations"][()],
                ],
                axis=1,
            )
            expected_clipped += int(np.sum(np.abs(raw) > 1.0))
            np.testing.assert_array_equal(df.read(demo, "actions"), np.clip(raw, -1, 1))
            np.testing.assert_array_equal(df.read(demo, "states"), src[f"data/{demo}/states"][()])
            k = int(demo.split("_")[1])
            assert df.demo_attrs(demo)["model_file"] == model_xml(k)
        meta = df.env_meta
        assert (meta.env_name, meta.env_type) == ("SawyerPickPlaceCanTeleop", 1)
        assert meta.env_kwargs == ROBOSUITE_V03_KWARGS
        assert df.total == sum(LENGTHS)
        keys = {k: df.filter_key_demos(k) for k in df.filter_keys}
    assert result.clipped_values == expected_clipped > 0
    assert result.action_values == sum(LENGTHS) * 8
    # a states-only file is what validate calls raw: observations are still to be extracted
    # (with robosuite 0.3, whose models these are); nothing else may be wrong with it
    errors = [f for f in validate(out) if f.level == "error"]
    assert [(f.code, f.h5path) for f in errors] == [("raw_robosuite", "/data/demo_1")]

    demos = [f"demo_{k}" for k in range(1, len(LENGTHS) + 1)]
    # the 90/10 split is robomimic's split_train_val rule with seed 0
    train, valid = split_demos(demos, 0.1, 0)
    assert (keys["train"], keys["valid"]) == (train, valid) and len(valid) == 1
    # fastest N as robomimic's script picks them: argsort of lengths over text-sorted names
    ordered = sorted(demos)
    by_name = dict(zip(demos, LENGTHS))
    fastest = [ordered[i] for i in np.argsort([by_name[d] for d in ordered])[:5]]
    assert keys["fastest_5"] == fastest
    assert sorted(keys["fastest_5"], key=by_name.get) == keys["fastest_5"]
    assert max(by_name[d] for d in fastest) <= min(by_name[d] for d in demos if d not in fastest)
    ft, fv = split_demos(fastest, 0.1, 0)
    assert (keys["fastest_5_train"], keys["fastest_5_valid"]) == (ft, fv)
    assert result.filter_keys == {k: len(v) for k, v in keys.items()}

    # robomimic 0.3.0 reads it (no observations: RoboTurk Pilot has none to extract)
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": []}})
    ds = SequenceDataset(
        hdf5_path=str(out),
        obs_keys=(),
        dataset_keys=("actions", "states"),
        seq_length=3,
        hdf5_cache_mode="all",
        load_next_obs=False,
        filter_by_attribute="fastest_5_train",
    )
    assert len(ds) == sum(by_name[d] for d in ft)
    item = ds[0]
    assert item["actions"].shape == (3, 8) and np.abs(item["actions"]).max() <= 1.0


def test_cli_reports_clipping(tmp_path, capsys):
    folder = make_task_folder(tmp_path)
    out = tmp_path / "cli.hdf5"
    assert main(["convert", "roboturk", "--folder", folder, "--out", str(out), "--n", "3"]) == 0
    printed = capsys.readouterr().out
    assert "clipped" in printed and "fastest_3 (3)" in printed
    with open_dataset(out) as df:
        assert "fastest_3_valid" in df.filter_keys


def test_model_file_outside_models_refused(tmp_path, capsys):
    folder = make_task_folder(tmp_path, model_name="../../../etc/passwd")
    out = tmp_path / "never.hdf5"
    with pytest.raises(ConversionError, match="outside the models folder"):
        convert_roboturk_pilot(folder, out)
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".partial")] == []
    # and the same through the CLI: one line, exit code 2
    assert main(["convert", "roboturk", folder, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "demo.hdf5" in err and "model_file" in err


def test_missing_arrays_named(tmp_path):
    folder = make_task_folder(tmp_path, lengths=[5, 6])
    with h5py.File(os.path.join(folder, "demo.hdf5"), "a") as f:
        del f["data/demo_2/gripper_actuations"]
    with pytest.raises(ConversionError, match="/data/demo_2/gripper_actuations"):
        convert_roboturk_pilot(folder, tmp_path / "x.hdf5")
    with pytest.raises(ConversionError, match="not a folder"):
        convert_roboturk_pilot(tmp_path / "nope", tmp_path / "x.hdf5")
