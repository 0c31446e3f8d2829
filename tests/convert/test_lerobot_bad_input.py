"""Bad LeRobot folders and zarr stores: one line naming the file, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("pyarrow")
zarr = pytest.importorskip("zarr")

from demoset.cli.main import main  # noqa: E402
from demoset.convert.lerobot_export import export_lerobot  # noqa: E402

from tests.helpers import write_dataset  # noqa: E402


@pytest.fixture(scope="module")
def good_lerobot(tmp_path_factory):
    base = tmp_path_factory.mktemp("lerobot_good")
    src = write_dataset(base / "src.hdf5", n_demos=3, cameras=("agentview",), image_size=16)
    export_lerobot(src, base / "ds", video_codec="h264-lossless")
    return base / "ds"


def _fails(capsys, args, out, *expected) -> str:
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    assert not os.path.exists(out)
    assert not [n for n in os.listdir(os.path.dirname(out)) if n.startswith(f".{out.name}")]
    return err


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_not_a_lerobot_dataset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(
        capsys,
        ["convert", "lerobot", str(tmp_path / "empty")],
        tmp_path / "o.hdf5",
        str(tmp_path / "empty"),
        "not a LeRobot dataset: no meta/info.json",
    )


def test_unknown_codebase_version(good_lerobot, tmp_path, capsys):
    ds = _copy(good_lerobot, tmp_path)
    info_path = ds / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["codebase_version"] = "v9.0"
    info_path.write_text(json.dumps(info))
    _fails(
        capsys,
        ["convert", "lerobot", str(ds)],
        tmp_path / "o.hdf5",
        str(info_path),
        "unknown codebase_version 'v9.0'",
    )


def test_missing_video_file(good_lerobot, tmp_path, capsys):
    ds = _copy(good_lerobot, tmp_path)
    video = ds / "videos" / "observation.images.agentview" / "chunk-000" / "file-000.mp4"
    os.remove(video)
    _fails(
        capsys,
        ["convert", "lerobot", str(ds)],
        tmp_path / "o.hdf5",
        str(video),
        "video file is missing",
    )


def test_timestamps_that_do_not_match_the_fps(good_lerobot, tmp_path, capsys):
    ds = _copy(good_lerobot, tmp_path)
    info_path = ds / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["fps"] = 30  # the frames were written at 20 fps
    info_path.write_text(json.dumps(info))
    _fails(
        capsys,
        ["convert", "lerobot", str(ds)],
        tmp_path / "o.hdf5",
        str(ds / "data" / "chunk-000" / "file-000.parquet"),
        "episode 0: timestamps step by 0.05 s",
    )


def test_episode_metadata_that_disagrees_with_the_data(good_lerobot, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = _copy(good_lerobot, tmp_path)
    path = ds / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    lengths = table.column("length").to_numpy().copy()
    lengths[1] += 1
    pq.write_table(
        table.set_column(table.column_names.index("length"), "length", pa.array(lengths)), path
    )
    _fails(
        capsys,
        ["convert", "lerobot", str(ds)],
        tmp_path / "o.hdf5",
        "file-000.parquet",
        "episode 1 has",
    )


def _store(path, ends, rows: int | None = None):
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    total = int(ends[-1]) if rows is None else rows
    root.require_group("data").create_array("action", shape=(total, 2), dtype="float32")
    root["data/action"][:] = np.ones((total, 2), dtype=np.float32)
    meta = root.require_group("meta")
    meta.create_array("episode_ends", shape=(len(ends),), dtype="int64")
    meta["episode_ends"][:] = np.asarray(ends)
    return path


def test_bad_zarr_stores(tmp_path, capsys):
    _fails(
        capsys,
        ["convert", "zarr", str(tmp_path / "none.zarr")],
        tmp_path / "a.hdf5",
        "none.zarr",
        "not a zarr store",
    )
    store = _store(tmp_path / "ends.zarr", [5, 3, 9])
    _fails(capsys, ["convert", "zarr", str(store)], tmp_path / "b.hdf5", "ends.zarr", "cumulative")
    store = _store(tmp_path / "rows.zarr", [5, 9], rows=12)
    _fails(
        capsys,
        ["convert", "zarr", str(store)],
        tmp_path / "c.hdf5",
        "rows.zarr",
        "data/action has 12 rows; meta/episode_ends ends at 9",
    )
