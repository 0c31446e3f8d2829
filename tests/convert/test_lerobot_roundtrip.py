"""robomimic -> LeRobot -> robomimic: every low-dim value, demo, attribute and filter key.

The LeRobot side is demoset's own writer and reader here; tests/convert/test_lerobot_real.py
checks both against LeRobot's real code.
"""

from __future__ import annotations

import json
import math
import os

import h5py
import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("pyarrow")

from demoset.cli.main import main  # noqa: E402
from demoset.convert.lerobot_export import export_lerobot  # noqa: E402
from demoset.convert.lerobot_import import convert_lerobot  # noqa: E402
from demoset.convert.video_av import psnr  # noqa: E402

from tests.convert.roundtrip_compare import (  # noqa: E402
    assert_valid,
    differences,
    write_smooth_dataset,
)

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "lift_example.hdf5")


def _dataset(tmp_path) -> str:
    """Cameras, action_dict, filter keys, a float depth camera, a language instruction,
    and one demo whose next_obs is not obs shifted by one."""
    path = write_smooth_dataset(
        tmp_path / "src.hdf5",
        n_demos=4,
        action_dict=True,
        filter_keys={"train": ["demo_0", "demo_1", "demo_3"], "valid": ["demo_2"]},
    )
    rng = np.random.default_rng(3)
    with h5py.File(path, "r+") as f:
        for demo in f["data"]:
            grp = f["data"][demo]
            n = grp["actions"].shape[0]
            depth = rng.random((n + 1, 8, 8, 1)).astype(np.float32)
            grp["obs"].create_dataset("agentview_depth", data=depth[:n])
            grp["next_obs"].create_dataset("agentview_depth", data=depth[1:])
        f["data/demo_0"].attrs["ep_meta"] = json.dumps({"lang": "lift the red cube"})
        f["data/demo_2/next_obs/object"][0] += 1.0
        f["data"].attrs["repository_version"] = "test-1"
    return path


def test_lossless_v30_round_trip_keeps_every_value(tmp_path):
    src = _dataset(tmp_path)
    out = tmp_path / "lerobot"
    result = export_lerobot(src, out, fps=10, video_codec="h264-lossless")
    assert result.lossless and all(math.isinf(v.psnr) for v in result.videos.values())
    assert result.extra_obs_keys == ["agentview_depth"]
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["total_episodes"] == 4 and info["total_frames"] == result.frames
    assert info["features"]["observation.images.agentview"]["dtype"] == "video"
    assert info["features"]["observation.robot0_eef_pos"]["dtype"] == "float32"
    assert (out / "videos" / "observation.images.wrist" / "chunk-000" / "file-000.mp4").is_file()
    assert {"lift the red cube", "Lift"} == set(result.tasks)
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert set(stats) >= {"action", "observation.state", "observation.images.agentview"}

    back = tmp_path / "back.hdf5"
    imported = convert_lerobot(out, back)
    assert imported.restored_from_export and imported.demos == 4
    assert differences(src, str(back)) == []
    # nothing more either, but the provenance attributes the import adds to /data
    assert [d for d in differences(str(back), src) if not d.startswith("data@")] == []
    assert_valid(str(back))


def test_lossy_video_round_trip_is_within_the_reported_psnr(tmp_path):
    src = write_smooth_dataset(tmp_path / "src.hdf5", n_demos=3)
    out = tmp_path / "lerobot"
    result = export_lerobot(src, out, video_codec="h264")
    assert not result.lossless
    back = tmp_path / "back.hdf5"
    convert_lerobot(out, back)
    with h5py.File(src, "r") as fa, h5py.File(back, "r") as fb:
        demos = sorted(fa["data"].keys())
        for key, report in result.videos.items():
            a = np.concatenate([fa[f"data/{d}/obs/{key}"][()] for d in demos])
            b = np.concatenate([fb[f"data/{d}/obs/{key}"][()] for d in demos])
            assert 30.0 < report.psnr < math.inf
            assert psnr(a, b) == pytest.approx(report.psnr, abs=1e-6)
            assert not np.array_equal(a, b)
    # every array but the frames is bit for bit
    assert differences(src, str(back), image_psnr=30.0) == []
    assert_valid(str(back))


def test_v21_layout_round_trip(tmp_path):
    src = _dataset(tmp_path)
    out = tmp_path / "lerobot21"
    export_lerobot(src, out, video_codec="h264-lossless", codebase_version="v2.1")
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["total_chunks"] == 1
    assert (out / "data" / "chunk-000" / "episode_000003.parquet").is_file()
    assert (
        out / "videos" / "chunk-000" / "observation.images.agentview" / "episode_000000.mp4"
    ).is_file()
    lines = (out / "meta" / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(x)["episode_index"] for x in lines] == [0, 1, 2, 3]
    assert len((out / "meta" / "episodes_stats.jsonl").read_text().splitlines()) == 4
    back = tmp_path / "back.hdf5"
    assert convert_lerobot(out, back).codebase_version == "v2.1"
    assert differences(src, str(back)) == []
    assert_valid(str(back))


def test_import_without_demoset_extras_reads_feature_names(tmp_path):
    src = write_smooth_dataset(tmp_path / "src.hdf5", n_demos=4)
    out = tmp_path / "lerobot"
    export_lerobot(src, out, video_codec="h264-lossless", task="pick it up")
    os.remove(out / "meta" / "demoset.hdf5")  # what any other LeRobot dataset looks like
    back = tmp_path / "back.hdf5"
    result = convert_lerobot(out, back, valid_ratio=0.5)
    assert not result.restored_from_export
    assert set(result.obs_keys) == {
        "agentview_image",
        "wrist_image",
        "robot0_eef_pos",
        "object",
        "state",
    }
    assert result.filter_keys == {"train": 2, "valid": 2}
    with h5py.File(src, "r") as fa, h5py.File(back, "r") as fb:
        env = json.loads(fb["data"].attrs["env_args"])
        assert env["type"] == 2 and env["env_name"] == "Panda"
        for i, demo in enumerate(sorted(fa["data"].keys(), key=lambda d: int(d[5:]))):
            a, b = fa[f"data/{demo}"], fb[f"data/demo_{i}"]
            for key in ("robot0_eef_pos", "object", "agentview_image", "wrist_image"):
                assert np.array_equal(a[f"obs/{key}"][()], b[f"obs/{key}"][()])
                assert np.array_equal(a[f"obs/{key}"][1:], b[f"next_obs/{key}"][:-1])
            assert np.array_equal(a["actions"][()], b["actions"][()])
            assert np.array_equal(a["rewards"][()], b["rewards"][()])
            assert np.array_equal(a["dones"][()], b["dones"][()])
            state = np.concatenate([a["obs/object"][()], a["obs/robot0_eef_pos"][()]], axis=1)
            assert np.array_equal(b["obs/state"][()], state.astype(np.float32))
            assert json.loads(b.attrs["ep_meta"])["lang"] == "pick it up"
    assert_valid(str(back))


def test_real_renders_round_trip_through_the_cli(tmp_path, capsys):
    out = tmp_path / "lift_lerobot"
    assert (
        main(["export", "lerobot", EXAMPLE, "--out", str(out), "--video-codec", "h264-lossless"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "observation.images.agentview (agentview_image): h264-lossless" in printed
    assert "PSNR exact (lossless)" in printed
    back = tmp_path / "lift_back.hdf5"
    assert main(["convert", "lerobot", str(out), "--out", str(back)]) == 0
    assert "restored demo names" in capsys.readouterr().out
    assert differences(EXAMPLE, str(back)) == []
    assert main(["validate", str(back)]) == 0


def test_v30_files_roll_over_and_import_across_them(tmp_path, monkeypatch):
    """Past the size limits a v3.0 dataset continues in the next data/video file."""
    from demoset.convert import lerobot_layout

    monkeypatch.setattr(lerobot_layout, "DATA_FILE_MB", 1e-6)
    monkeypatch.setattr(lerobot_layout, "VIDEO_FILE_MB", 1e-6)
    src = write_smooth_dataset(tmp_path / "src.hdf5", n_demos=3)
    out = tmp_path / "lerobot"
    export_lerobot(src, out, video_codec="h264-lossless")
    assert sorted(os.listdir(out / "data" / "chunk-000")) == [
        "file-000.parquet",
        "file-001.parquet",
        "file-002.parquet",
    ]
    assert len(os.listdir(out / "videos" / "observation.images.wrist" / "chunk-000")) == 3
    back = tmp_path / "back.hdf5"
    convert_lerobot(out, back)
    assert differences(src, str(back)) == []
