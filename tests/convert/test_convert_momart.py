"""`demoset convert momart`: validate a MOMART file and add its missing train/valid split.

The test files are written in MOMART's layout: the robomimic layout with env type 3
(iGibson), RGB and depth images from a base and a wrist camera, and proprioception.
"""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.convert.momart import convert_momart
from demoset.errors import ConversionError
from demoset.format import DatasetWriter, open_dataset, validate
from demoset.masks import split_demos

MOMART_ENV = {
    "env_name": "MomartTableSetupFromDishwasher",
    "type": 3,
    "env_kwargs": {"scene_id": "Rs_int", "robot": "Fetch", "image_height": 48, "image_width": 48},
}


def write_momart(path, n_demos=12, env=MOMART_ENV, seed=0) -> str:
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, env_meta=env, image_compression="gzip") as w:
        for _ in range(n_demos):
            n = int(rng.integers(10, 16))
            obs = {
                "rgb": rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8),
                "rgb_wrist": rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8),
                "depth": rng.uniform(0, 5, (n, 48, 48, 1)).astype(np.float32),
                "depth_wrist": rng.uniform(0, 5, (n, 48, 48, 1)).astype(np.float32),
                "proprio": rng.standard_normal((n, 12)).astype(np.float32),
            }
            w.add_demo(
                actions=rng.uniform(-1, 1, (n, 10)),
                obs=obs,
                derive_next_obs=True,
                states=np.zeros((n, 0)),
            )
    return str(path)


def array_hashes(path) -> dict[str, str]:
    """sha256 of every dataset's values under /data (the demos, not the masks)."""
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = hashlib.sha256(np.ascontiguousarray(obj[()]).tobytes()).hexdigest()

        f["data"].visititems(visit)
    return out


def file_fingerprint(path) -> tuple[str, int]:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns


def test_new_file_with_split(tmp_path):
    src = write_momart(tmp_path / "table_setup.hdf5")
    before = file_fingerprint(src)
    out = tmp_path / "out.hdf5"
    result = convert_momart(src, out)
    assert file_fingerprint(src) == before
    assert result.added_filter_keys == {"train": 11, "valid": 1} and not result.in_place
    assert [f for f in validate(out) if f.level == "error"] == []
    assert array_hashes(out) == array_hashes(src)
    with open_dataset(out) as df:
        train, valid = split_demos(df.demos, 0.1, 0)
        assert df.filter_key_demos("train") == train and df.filter_key_demos("valid") == valid
        assert df.env_meta.env_type == 3

    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    ObsUtils.initialize_obs_utils_with_obs_specs(
        {
            "obs": {
                "low_dim": ["proprio"],
                "rgb": ["rgb", "rgb_wrist"],
                "depth": ["depth", "depth_wrist"],
            }
        }
    )
    ds = SequenceDataset(
        hdf5_path=str(out),
        obs_keys=("proprio", "rgb", "rgb_wrist", "depth", "depth_wrist"),
        dataset_keys=("actions",),
        seq_length=2,
        hdf5_cache_mode="low_dim",
        filter_by_attribute="valid",
    )
    item = ds[0]
    assert item["obs"]["rgb"].shape == (2, 48, 48, 3) and item["obs"]["depth"].shape == (
        2,
        48,
        48,
        1,
    )


def test_in_place_edits_only_the_mask(tmp_path, capsys):
    src = write_momart(tmp_path / "table_setup.hdf5")
    hashes = array_hashes(src)
    size = os.path.getsize(src)
    assert main(["convert", "momart", src, "--in-place"]) == 0
    assert "added train (11 demos), valid (1 demos) in place" in capsys.readouterr().out
    assert array_hashes(src) == hashes
    # a few bytes of filter keys, not a copy of the ~1.5 MB of images
    assert size > 1_000_000 and os.path.getsize(src) - size < 64 * 1024
    with open_dataset(src) as df:
        assert df.filter_keys == ["train", "valid"]
    assert [f for f in validate(src) if f.level == "error"] == []
    # a second run finds the split and changes nothing
    before = file_fingerprint(src)
    result = convert_momart(src, in_place=True)
    assert result.added_filter_keys == {} and file_fingerprint(src) == before


def test_refusals_leave_the_source_alone(tmp_path, capsys):
    lift = write_momart(
        tmp_path / "lift.hdf5", n_demos=3, env={"env_name": "Lift", "type": 1, "env_kwargs": {}}
    )
    before = file_fingerprint(lift)
    with pytest.raises(ConversionError, match="type is 1"):
        convert_momart(lift, in_place=True)
    assert file_fingerprint(lift) == before

    broken = write_momart(tmp_path / "broken.hdf5", n_demos=3)
    with h5py.File(broken, "a") as f:
        f["data"].attrs["total"] = 1  # disagrees with the demos
    before = file_fingerprint(broken)
    assert main(["convert", "momart", broken, "--out", str(tmp_path / "never.hdf5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "validation error" in err and str(broken) in err
    assert file_fingerprint(broken) == before and not (tmp_path / "never.hdf5").exists()

    lone = write_momart(tmp_path / "lone.hdf5", n_demos=3)
    with DatasetWriter(lone, mode="a") as w:
        w.set_filter_key("train", ["demo_0"])
    with pytest.raises(ConversionError, match="without its partner"):
        convert_momart(lone, tmp_path / "x.hdf5")
    with pytest.raises(ConversionError, match="either an output file or in_place"):
        convert_momart(lone)
    with pytest.raises(ConversionError, match="overwrite the source"):
        convert_momart(lone, lone)
    assert [p for p in os.listdir(tmp_path) if p.endswith(".partial")] == []
