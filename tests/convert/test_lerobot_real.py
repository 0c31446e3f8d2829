"""demoset's LeRobot converters against LeRobot's own code (lerobot 0.4.4).

lerobot pins an older torch than demoset's environment, so it runs in its own venv
(scripts/lerobot_env.sh, built by scripts/setup.sh or, when missing, by the fixture
below) and is driven through subprocess by tests/convert/lerobot_probe.py:
- LeRobotDataset loads demoset's v3.0 export and gives the same low-dim values; the
  frames, picked from the MP4 at LeRobot's own from_timestamp + timestamp, are the
  original ones within the PSNR the export reported (exactly with h264-lossless);
- LeRobot's own v2.1 -> v3.0 converter accepts demoset's v2.1 export;
- a dataset written by LeRobotDataset.create + add_frame + save_episode converts into
  the robomimic layout with the same values.
LeRobot's own frame decoding needs torchvision or torchcodec, neither of which runs
beside this torch: that one step is PyAV in the tests, as in LeRobot's PyAV backend.

tests/convert/data/lerobot_v30_made/ is such a LeRobot-written dataset, committed, so the
import is also checked where the venv cannot be built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("pyarrow")

from demoset.convert.lerobot_export import export_lerobot  # noqa: E402
from demoset.convert.lerobot_import import convert_lerobot  # noqa: E402
from demoset.convert.video_av import psnr  # noqa: E402

from tests.convert.roundtrip_compare import assert_valid, write_smooth_dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(REPO, "examples", "lift_example.hdf5")
PROBE = os.path.join(HERE, "lerobot_probe.py")
FIXTURE = os.path.join(HERE, "data", "lerobot_v30_made")
FIXTURE_VALUES = os.path.join(HERE, "data", "lerobot_v30_made.npz")
VENV = os.environ.get("DEMOSET_LEROBOT_VENV", os.path.expanduser("~/.cache/demoset/lerobot-venv"))
pytestmark = pytest.mark.xdist_group("lerobot_venv")


@pytest.fixture(scope="session")
def lerobot_python() -> str:
    """The lerobot venv's python, building the venv first when it is missing."""
    python = os.path.join(VENV, "bin", "python")
    if not os.path.isfile(os.path.join(VENV, ".demoset-lerobot-ready")):
        proc = subprocess.run(
            ["bash", os.path.join(REPO, "scripts", "lerobot_env.sh"), VENV],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if proc.returncode != 0:
            pytest.fail(
                "could not build the lerobot venv (scripts/lerobot_env.sh):\n"
                + (proc.stdout + proc.stderr)[-3000:]
            )
    return python


def _probe(python: str, *args: str, cwd: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_OFFLINE"] = "1"
    env["HF_HOME"] = os.path.join(cwd, "hf_home")
    proc = subprocess.run(
        [python, PROBE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def _info(npz) -> dict:
    return json.loads(bytes(npz["info"]).decode())


def _demos(f: h5py.File) -> list[str]:
    return sorted(f["data"].keys(), key=lambda d: int(d.split("_")[1]))


def _cat(f: h5py.File, key: str) -> np.ndarray:
    return np.concatenate([f[f"data/{d}/{key}"][()] for d in _demos(f)])


def _check_read_by_lerobot(src: str, got, result) -> None:
    with h5py.File(src, "r") as f:
        lengths = [f[f"data/{d}/actions"].shape[0] for d in _demos(f)]
        info = _info(got)
        assert info["codebase_version"] == "v3.0"
        assert info["total_episodes"] == len(lengths) and info["len"] == sum(lengths)
        first = f[f"data/{_demos(f)[0]}/obs"]
        for key in [k for k in first if first[k].ndim == 2]:
            values, col = _cat(f, f"obs/{key}"), got[f"col/observation.{key}"]
            assert col.dtype == values.dtype and np.array_equal(col, values), key
            # LeRobot's frames are torch.tensor(list of floats): float32 whatever was stored
            assert np.array_equal(got[f"torch/observation.{key}"], values.astype(np.float32))
        assert np.array_equal(got["col/action"], _cat(f, "actions"))
        assert np.array_equal(got["col/next.reward"], _cat(f, "rewards"))
        assert np.array_equal(got["col/next.done"], _cat(f, "dones") != 0)
        episodes = np.repeat(np.arange(len(lengths)), lengths)
        assert np.array_equal(got["torch/episode_index"], episodes)
        assert np.allclose(
            got["col/timestamp"], np.concatenate([np.arange(n) / 20 for n in lengths])
        )
        cameras = [k for k in first if first[k].ndim == 4]
        assert len(cameras) == 2
        for key in cameras:
            frames = got[f"video/observation.images.{key[: -len('_image')]}"]
            original = _cat(f, f"obs/{key}")
            if result.lossless:
                assert np.array_equal(frames, original), key
            else:
                assert 30 < result.videos[key].psnr < np.inf
                assert psnr(original, frames) == pytest.approx(result.videos[key].psnr, abs=1e-6)


@pytest.fixture(scope="module")
def lerobot_runs(lerobot_python, tmp_path_factory) -> dict:
    """One run of the lerobot venv (lerobot takes seconds to import): it reads demoset's
    exports (real renders through h264; synthetic frames lossless, in v3.0 and in v2.1
    upgraded by LeRobot's own converter) and writes a dataset with LeRobot's writer."""
    tmp = tmp_path_factory.mktemp("lerobot_real")
    small = write_smooth_dataset(tmp / "small.hdf5", n_demos=3)
    runs = {
        "h264": (EXAMPLE, export_lerobot(EXAMPLE, tmp / "lift_h264", video_codec="h264")),
        "exact": (small, export_lerobot(small, tmp / "small_exact", video_codec="h264-lossless")),
        "v21": (
            small,
            export_lerobot(
                small, tmp / "small_v21", video_codec="h264-lossless", codebase_version="v2.1"
            ),
        ),
    }
    _probe(
        lerobot_python,
        "read", str(tmp / "lift_h264"), str(tmp / "h264.npz"),
        "read", str(tmp / "small_exact"), str(tmp / "exact.npz"),
        "upgrade", str(tmp / "small_v21"),
        "read", str(tmp / "small_v21"), str(tmp / "v21.npz"),
        "write", str(tmp / "made_by_lerobot"), str(tmp / "given.npz"),
        cwd=str(tmp),
    )  # fmt: skip
    return {"tmp": tmp, "runs": runs}


@pytest.mark.parametrize("name", ["h264", "exact", "v21"])
def test_lerobot_reads_demoset_exports(lerobot_runs, name):
    src, result = lerobot_runs["runs"][name]
    got = np.load(lerobot_runs["tmp"] / f"{name}.npz")
    _check_read_by_lerobot(src, got, result)
    if name == "h264":
        assert _info(got)["tasks"] == ["Lift"]


def _check_made_by_lerobot(root: str, values: dict, tmp_path) -> None:
    out = tmp_path / "made.hdf5"
    result = convert_lerobot(root, out, valid_ratio=0.34)
    assert result.codebase_version == "v3.0" and not result.restored_from_export
    assert result.demos == 3 and result.frames == int(values["lengths"].sum())
    assert sorted(result.obs_keys) == ["front_image", "state"]
    assert result.filter_keys == {"train": 2, "valid": 1}
    with h5py.File(out, "r") as f:
        assert [f[f"data/{d}/actions"].shape[0] for d in _demos(f)] == values["lengths"].tolist()
        assert np.array_equal(_cat(f, "obs/state"), values["observation.state"])
        assert _cat(f, "obs/state").dtype == np.float32
        assert np.array_equal(_cat(f, "actions"), values["action"])
        assert np.array_equal(_cat(f, "rewards"), values["next.reward"][:, 0])
        assert np.array_equal(_cat(f, "dones"), values["next.done"][:, 0].astype(np.int64))
        # LeRobot's writer encodes AV1 (lossy) by default
        assert psnr(values["observation.images.front"], _cat(f, "obs/front_image")) > 25.0
        langs = [json.loads(f[f"data/{d}"].attrs["ep_meta"])["lang"] for d in _demos(f)]
        assert langs == ["stack the blocks 0", "stack the blocks 1", "stack the blocks 0"]
        env = json.loads(f["data"].attrs["env_args"])
        assert env["type"] == 2
    assert_valid(str(out))


def test_dataset_written_by_lerobot_converts(lerobot_runs, tmp_path):
    tmp = lerobot_runs["tmp"]
    values = dict(np.load(tmp / "given.npz"))
    _check_made_by_lerobot(str(tmp / "made_by_lerobot"), values, tmp_path)


def test_committed_lerobot_fixture_converts(tmp_path):
    """The same check on a dataset LeRobot's writer made once (no venv needed)."""
    root = tmp_path / "fixture"
    shutil.copytree(FIXTURE, root)
    _check_made_by_lerobot(str(root), dict(np.load(FIXTURE_VALUES)), tmp_path)


if __name__ == "__main__":  # regenerate the committed fixture with LeRobot's own writer
    python = os.path.join(VENV, "bin", "python")
    shutil.rmtree(FIXTURE, ignore_errors=True)
    subprocess.run([python, PROBE, "write", FIXTURE, FIXTURE_VALUES], check=True)
    sys.exit(0)
