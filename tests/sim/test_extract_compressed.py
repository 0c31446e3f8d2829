"""extract-obs writes real renders with the compression setting (images and depth)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.format.compression import filter_ids, storage_of

EXAMPLE_RAW = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "examples",
    "lift_raw.hdf5",
)


@pytest.mark.sim
def test_extract_obs_cli_compresses_renders_and_depth(tmp_path):
    lift = tmp_path / "lift.hdf5"
    # convert takes the setting too (no images here: every array is copied as it was)
    args = ["convert", "robosuite", EXAMPLE_RAW, "--out", str(lift), "--compression", "zstd"]
    assert main(args) == 0
    out = tmp_path / "img.hdf5"
    args = [
        "extract-obs",
        str(lift),
        "--out",
        str(out),
        "--camera_names",
        "agentview",
        "--camera_height",
        "48",
        "--camera_width",
        "48",
        "--depth",
        "--n",
        "1",
        "--compression",
        "zstd:9:8",
    ]
    assert main(args) == 0
    with h5py.File(out, "r") as f:
        demo = f["data"][sorted(f["data"])[0]]
        for key in ("obs/agentview_image", "obs/agentview_depth", "next_obs/agentview_image"):
            dset = demo[key]
            assert dset.chunks[0] == 8 and 32015 in filter_ids(dset), key
        image = storage_of(demo["obs/agentview_image"])
        assert image["ratio"] > 3  # real renders: frames in a row nearly equal
        assert storage_of(demo["obs/agentview_depth"])["ratio"] > 2
        frames = demo["obs/agentview_image"][()]
        assert frames.std() > 0 and np.array_equal(
            demo["next_obs/agentview_image"][:-1], frames[1:]
        )
