"""validate(): each finding, named by its HDF5 path, on files damaged on purpose."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from demoset.format import DatasetWriter, validate


def codes(path):
    return {(f.code, f.level, f.h5path) for f in validate(path)}


def only_codes(path):
    return {f.code for f in validate(path)}


def test_clean_file_has_no_findings(make_dataset):
    assert validate(make_dataset(cameras=("agentview",), action_dict=True)) == []


def test_no_data_group(tmp_path):
    path = tmp_path / "x.hdf5"
    h5py.File(path, "w").close()
    assert codes(path) == {("no_data", "error", "/data")}


def edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)
    return path


@pytest.mark.parametrize(
    "damage, code, h5path",
    [
        (lambda f: f["data"].attrs.__setitem__("total", 3), "total_mismatch", "/data"),
        (lambda f: f["data"].attrs.__delitem__("total"), "missing_total", "/data"),
        (
            lambda f: f["data/demo_1"].attrs.__setitem__("num_samples", 999),
            "num_samples_mismatch",
            "/data/demo_1",
        ),
        (
            lambda f: f["data/demo_1"].attrs.__delitem__("num_samples"),
            "missing_num_samples",
            "/data/demo_1",
        ),
        (
            lambda f: (
                f["data/demo_0"].__delitem__("rewards"),
                f["data/demo_0"].create_dataset("rewards", data=np.zeros(2)),
            ),
            "length_mismatch",
            "/data/demo_0/rewards",
        ),
        (
            lambda f: f["data/demo_0/next_obs"].__delitem__("object"),
            "next_obs_keys",
            "/data/demo_0/next_obs",
        ),
        (
            lambda f: (
                f["data/demo_0/next_obs"].__delitem__("object"),
                f["data/demo_0/next_obs"].create_dataset(
                    "object", data=np.zeros((f["data/demo_0/actions"].shape[0], 4))
                ),
            ),
            "next_obs_shape",
            "/data/demo_0/next_obs/object",
        ),
        (lambda f: f["data"].attrs.__setitem__("env_args", "{oops"), "bad_env_args", "/data"),
        (
            lambda f: f["data"].attrs.__setitem__(
                "env_args", json.dumps({"env_name": "Lift", "env_kwargs": {}})
            ),
            "bad_env_args",
            "/data",
        ),
        (lambda f: f["data"].attrs.__delitem__("env_args"), "missing_env_args", "/data"),
        (
            lambda f: f.create_dataset("mask/bad", data=np.array([b"demo_0", b"demo_99"])),
            "filter_key_unknown_demo",
            "/mask/bad",
        ),
        (
            lambda f: f.create_dataset("mask/twice", data=np.array([b"demo_0", b"demo_0"])),
            "filter_key_duplicate",
            "/mask/twice",
        ),
    ],
)
def test_each_error_finding(make_dataset, damage, code, h5path):
    path = edit(make_dataset(n_demos=3), damage)
    found = codes(path)
    assert (code, "error", h5path) in found, found


def test_nan_and_inf(make_dataset):
    def damage(f):
        a = f["data/demo_2/actions"]
        a[0, 0] = np.nan
        a[1, 1] = np.inf

    path = edit(make_dataset(n_demos=3), damage)
    finding = [f for f in validate(path) if f.code == "non_finite"]
    assert (
        finding
        and finding[0].h5path == "/data/demo_2/actions"
        and "1 NaN and 1 Inf" in finding[0].message
    )


def test_actions_out_of_range_is_a_warning_with_bound(tmp_path):
    path = tmp_path / "a.hdf5"
    with DatasetWriter(path, env_meta={"env_name": "X", "type": 2, "env_kwargs": {}}) as w:
        w.add_demo(np.array([[0.5, -3.25], [0.1, 2.0]]))
    findings = validate(path)
    assert [f.level for f in findings] == ["warning"]
    assert findings[0].code == "actions_out_of_range" and "-3.25" in findings[0].message


def test_images_not_uint8_hwc(tmp_path):
    path = tmp_path / "img.hdf5"
    with DatasetWriter(path, env_meta={"env_name": "X", "type": 2, "env_kwargs": {}}) as w:
        w.add_demo(np.zeros((3, 2)), obs={"agentview_image": np.zeros((3, 3, 8, 8), np.float32)})
    found = codes(path)
    assert ("image_format", "error", "/data/demo_0/obs/agentview_image") in found


def test_raw_robosuite_file_says_what_to_run(tmp_path):
    path = tmp_path / "raw.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env"] = "Lift"
        data.attrs["env_info"] = json.dumps({"robots": "Panda"})
        grp = data.create_group("demo_1")
        grp.attrs["model_file"] = "<mujoco/>"
        grp["states"] = np.zeros((4, 10))
        grp["actions"] = np.zeros((4, 7))
    findings = [f for f in validate(path) if f.code == "raw_robosuite"]
    assert (
        findings
        and "demoset convert robosuite" in findings[0].message
        and "extract-obs" in findings[0].message
    )


def test_incomplete_staged_demo_is_a_warning(make_dataset):
    def damage(f):
        f.create_group("demoset_staging/demo_9")

    path = edit(make_dataset(n_demos=2), damage)
    assert codes(path) == {("incomplete_demo", "warning", "/demoset_staging")}
