"""robomimic <-> diffusion_policy replay buffer (zarr): layout rules and exact round trips."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from demoset.cli.main import main  # noqa: E402
from demoset.convert.zarr_replay import convert_zarr, export_zarr  # noqa: E402

from tests.convert.roundtrip_compare import (  # noqa: E402
    assert_valid,
    differences,
    write_smooth_dataset,
)

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "lift_example.hdf5")


def test_export_follows_the_replay_buffer_layout(tmp_path):
    src = write_smooth_dataset(tmp_path / "src.hdf5", n_demos=3, action_dict=True)
    result = export_zarr(src, tmp_path / "buf.zarr")
    root = zarr.open_group(str(tmp_path / "buf.zarr"), mode="r")
    assert root.metadata.zarr_format == 2  # what diffusion_policy's zarr 2 opens
    with h5py.File(src, "r") as f:
        demos = sorted(f["data"].keys(), key=lambda d: int(d[5:]))
        lengths = [f[f"data/{d}/actions"].shape[0] for d in demos]
        ends = root["meta/episode_ends"][:]
        assert ends.dtype == np.int64 and ends.tolist() == np.cumsum(lengths).tolist()
        data = root["data"]
        assert {data[k].shape[0] for k in data.array_keys()} == {sum(lengths)}
        np.testing.assert_array_equal(
            data["action"][:], np.concatenate([f[f"data/{d}/actions"][()] for d in demos])
        )
        np.testing.assert_array_equal(
            data["agentview_image"][:],
            np.concatenate([f[f"data/{d}/obs/agentview_image"][()] for d in demos]),
        )
    image = data["agentview_image"]
    assert image.chunks == (1, 32, 32, 3)
    assert type(image.compressors[0]).__name__ == "Blosc"
    assert result.image_keys == ["agentview_image", "wrist_image"]


def test_round_trip_keeps_every_value(tmp_path):
    src = write_smooth_dataset(
        tmp_path / "src.hdf5",
        n_demos=4,
        action_dict=True,
        filter_keys={"train": ["demo_0", "demo_2", "demo_3"], "valid": ["demo_1"]},
    )
    with h5py.File(src, "r+") as f:
        f["data/demo_1/next_obs/object"][2] += 1.0  # next_obs that is not a shift
        f["data/demo_3"].attrs["ep_meta"] = json.dumps({"lang": "lift"})
    export_zarr(src, tmp_path / "buf.zarr")
    back = tmp_path / "back.hdf5"
    result = convert_zarr(tmp_path / "buf.zarr", back)
    assert result.restored_from_export and result.filter_keys == {"train": 3, "valid": 1}
    assert differences(src, str(back)) == []
    assert [d for d in differences(str(back), src) if not d.startswith("data@")] == []
    assert_valid(str(back))


def test_real_renders_round_trip_through_the_cli(tmp_path):
    store = tmp_path / "lift.zarr"
    assert main(["export", "zarr", EXAMPLE, "--out", str(store)]) == 0
    back = tmp_path / "lift_back.hdf5"
    assert main(["convert", "zarr", str(store), "--out", str(back)]) == 0
    assert differences(EXAMPLE, str(back)) == []
    assert main(["validate", str(back)]) == 0


def test_a_diffusion_policy_style_store_imports(tmp_path):
    """A store as diffusion_policy's own scripts lay it out (push-T naming)."""
    rng = np.random.default_rng(0)
    ends = np.array([5, 12, 20])
    root = zarr.open_group(str(tmp_path / "pusht.zarr"), mode="w", zarr_format=2)
    data = root.require_group("data")
    values = {
        "action": rng.standard_normal((20, 2)).astype(np.float32),
        "state": rng.standard_normal((20, 5)).astype(np.float32),
        "img": rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
    }
    for key, arr in values.items():
        data.create_array(key, shape=arr.shape, dtype=arr.dtype, chunks=(1, *arr.shape[1:]))
        data[key][:] = arr
    root.require_group("meta").create_array("episode_ends", shape=(3,), dtype="int64")
    root["meta/episode_ends"][:] = ends
    back = tmp_path / "pusht.hdf5"
    result = convert_zarr(tmp_path / "pusht.zarr", back, valid_ratio=0.34)
    assert result.demos == 3 and sorted(result.obs_keys) == ["img", "state"]
    assert result.filter_keys == {"train": 2, "valid": 1}
    with h5py.File(back, "r") as f:
        assert json.loads(f["data"].attrs["env_args"])["type"] == 2
        for i, (a, b) in enumerate(zip([0, 5, 12], ends)):
            grp = f[f"data/demo_{i}"]
            np.testing.assert_array_equal(grp["actions"][()], values["action"][a:b])
            np.testing.assert_array_equal(grp["obs/state"][()], values["state"][a:b])
            np.testing.assert_array_equal(grp["obs/img"][()], values["img"][a:b])
            np.testing.assert_array_equal(grp["next_obs/img"][:-1], values["img"][a + 1 : b])
            assert grp["dones"][()].tolist() == [0] * (b - a - 1) + [1]
    assert_valid(str(back))
