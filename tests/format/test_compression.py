"""Lossless image compression: the setting, the writer, `demoset compress`, bad input.

Real HDF5 files with hdf5plugin's filters; the missing-filter case runs the real CLI in a
subprocess where hdf5plugin cannot be imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.compress import compress_file
from demoset.errors import DemosetError, LayoutError, WriteError
from demoset.format import DatasetWriter, open_dataset
from demoset.format.compression import Compression, filter_ids, parse_compression

from tests.helpers import LIFT_ENV, write_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def video_like(n: int, size: int = 24, seed: int = 0) -> np.ndarray:
    """Frames that change little from one to the next (as renders do), so they compress."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for t in range(n):
        frames[t, t % size, :, :] = rng.integers(0, 256, (size, 3), dtype=np.uint8)
    return frames


def test_parse_compression():
    assert str(parse_compression("blosc2")) == "blosc2-zstd:5:16"
    assert str(parse_compression("zstd")) == "zstd:9:16"
    assert str(parse_compression("lz4hc")) == "lz4hc:9:16"
    assert str(parse_compression("blosc2-lz4:3:8")) == "blosc2-lz4:3:8"
    assert str(parse_compression("gzip")) == "gzip:4:1"  # the older names: one frame per chunk
    assert str(parse_compression("gzip::16")) == "gzip:4:16"
    assert not parse_compression(None).enabled and not parse_compression("none").enabled
    assert parse_compression("zstd", level=3, frames=4) == Compression("zstd", 3, 4)
    for bad in ("rar", "zstd:x", "zstd:1:2:3", "zstd:-1"):
        with pytest.raises(DemosetError):
            parse_compression(bad)
    with pytest.raises(WriteError, match="unknown image compression"):
        DatasetWriter("/tmp/never-written.hdf5", env_meta=LIFT_ENV, image_compression="rar")


@pytest.mark.parametrize(
    "spec, fid", [("zstd:9:8", 32015), ("lz4hc:9:8", 32001), ("blosc2-zstd:5:8", 32026)]
)
def test_writer_chunks_span_frames_and_round_trip(tmp_path, spec, fid):
    path = tmp_path / "c.hdf5"
    frames = video_like(21)
    depth = np.cumsum(np.random.default_rng(1).random((21, 24, 24, 1)), axis=0).astype(np.float32)
    with DatasetWriter(path, env_meta=LIFT_ENV, image_compression=spec) as w:
        w.add_demo(
            np.zeros((21, 2)),
            obs={"agentview_image": frames, "agentview_depth": depth, "pos": np.ones((21, 3))},
        )
    with h5py.File(path, "r") as f:
        img = f["data/demo_0/obs/agentview_image"]
        assert img.chunks == (8, 24, 24, 3)
        assert fid in filter_ids(img)
        assert fid in filter_ids(f["data/demo_0/obs/agentview_depth"])  # floats too
        assert f["data/demo_0/obs/pos"].chunks is None  # low-dim stays contiguous
        assert img.id.get_storage_size() < frames.nbytes / 2
    with open_dataset(path) as df:
        np.testing.assert_array_equal(df.read("demo_0", "obs/agentview_image"), frames)
        np.testing.assert_array_equal(df.read("demo_0", "obs/agentview_depth"), depth)


def test_compress_keeps_everything_and_verifies(tmp_path):
    src = write_dataset(
        tmp_path / "raw.hdf5",
        n_demos=3,
        cameras=("agentview",),
        filter_keys={"train": ["demo_0", "demo_2"]},
    )
    with h5py.File(src, "a") as f:  # real-looking frames and a depth map
        for demo in f["data"]:
            n = f["data"][demo]["actions"].shape[0]
            f["data"][demo]["obs/agentview_image"][...] = video_like(n, 16)
            f["data"][demo].attrs["ep_meta"] = '{"lang": "lift"}'
            f["data"][demo].create_group("extras").attrs["note"] = "kept"  # empty group
    out = tmp_path / "small.hdf5"
    seen = []
    report = compress_file(src, out, "zstd:9:4", verify=True, progress=lambda d, t: seen.append(d))
    assert report.verified and seen[-1] == report.frames
    key = report.keys["obs/agentview_image"]
    assert key.recoded and key.after < key.before
    assert not report.keys["actions"].recoded
    with open_dataset(src) as a, open_dataset(out) as b:
        assert a.demos == b.demos
        assert b.filter_key_demos("train") == ["demo_0", "demo_2"]
        assert b.env_meta.to_dict() == a.env_meta.to_dict()
        assert a.data_attrs().keys() == b.data_attrs().keys()
        for demo in a.demos:
            assert b.demo_attrs(demo) == a.demo_attrs(demo)
            for k in a.array_keys(demo):
                np.testing.assert_array_equal(a.read(demo, k), b.read(demo, k))
        assert b.dataset("demo_0", "obs/agentview_image").chunks[0] == 4
        assert b.h5["data/demo_1/extras"].attrs["note"] == "kept"
    # and back to uncompressed, contiguous
    plain = tmp_path / "plain.hdf5"
    compress_file(out, plain, "none", verify=True)
    with h5py.File(plain, "r") as f:
        assert f["data/demo_1/obs/agentview_image"].chunks is None


def test_compress_cli_summary_info_and_refusals(tmp_path, capsys):
    src = write_dataset(tmp_path / "raw.hdf5", n_demos=2, cameras=("agentview",))
    out = tmp_path / "c.hdf5"
    assert main(["compress", src, "--out", str(out), "--compression", "zstd::8", "--verify"]) == 0
    text = capsys.readouterr().out
    assert "obs/agentview_image" in text and "every frame verified" in text
    assert main(["info", str(out), "--no-isolation"]) == 0
    info = capsys.readouterr().out
    assert "obs/agentview_image: zstd+fletcher32, 8 frames/chunk" in info
    # an existing output is refused (exit 2, one line) and left as it was
    before = out.read_bytes()
    assert main(["compress", src, "--out", str(out)]) == 2
    assert out.read_bytes() == before
    with pytest.raises(SystemExit):
        main(["compress", src, "--out", str(tmp_path / "x.hdf5"), "--compression", "rar"])


def test_subset_and_merge_recompress(tmp_path):
    a = write_dataset(tmp_path / "a.hdf5", n_demos=2, cameras=("agentview",), seed=1)
    b = write_dataset(tmp_path / "b.hdf5", n_demos=2, cameras=("agentview",), seed=2)
    assert (
        main(
            [
                "subset",
                a,
                "--demos",
                "demo_1",
                "--out",
                str(tmp_path / "s.hdf5"),
                "--compression",
                "blosc2",
            ]
        )
        == 0
    )
    assert main(["merge", a, b, "--out", str(tmp_path / "m.hdf5"), "--compression", "zstd"]) == 0
    with open_dataset(tmp_path / "s.hdf5") as s, open_dataset(a) as src:
        assert 32026 in filter_ids(s.dataset("demo_1", "obs/agentview_image"))
        np.testing.assert_array_equal(
            s.read("demo_1", "obs/agentview_image"), src.read("demo_1", "obs/agentview_image")
        )
    with open_dataset(tmp_path / "m.hdf5") as m:
        assert len(m.demos) == 4
        assert 32015 in filter_ids(m.dataset("demo_3", "next_obs/agentview_image"))


def damage_chunk(path, h5path: str, index: int) -> None:
    with h5py.File(path, "r") as f:
        info = f[h5path].id.get_chunk_info(index)
    with open(path, "r+b") as fh:
        for where in (info.byte_offset + 4, info.byte_offset + info.size // 2):
            fh.seek(where)
            fh.write(b"\xff\x00\xff\x00\xff\x00\xff\x00")


@pytest.mark.parametrize("spec", ["zstd:9:8", "lz4hc:9:8", "blosc2-zstd:5:8"])
def test_damaged_chunk_names_demo_key_and_frames(tmp_path, spec):
    path = tmp_path / "d.hdf5"
    with DatasetWriter(path, env_meta=LIFT_ENV, image_compression=spec) as w:
        w.add_demo(np.zeros((30, 2)), obs={"agentview_image": video_like(30)})
    damage_chunk(path, "data/demo_0/obs/agentview_image", 1)  # frames 8-15
    with open_dataset(path) as df:
        np.testing.assert_array_equal(
            df.read("demo_0", "obs/agentview_image", 0, 8), video_like(30)[:8]
        )
        with pytest.raises(LayoutError) as err:
            df.read("demo_0", "obs/agentview_image", 10, 12)
    msg = str(err.value)
    assert "/data/demo_0/obs/agentview_image" in msg and "frames 10-11" in msg and "8-15" in msg
    from demoset.loader import SequenceDataset

    ds = SequenceDataset(
        str(path),
        ["agentview_image"],
        ["actions"],
        seq_length=5,
        cache_mode=None,
        stats_cache=False,
        load_next_obs=False,
    )
    with pytest.raises(DemosetError, match=r"demo_0/obs/agentview_image.*damaged chunk"):
        ds.get_batch(np.arange(len(ds)))
    assert main(["compress", str(path), "--out", str(tmp_path / "o.hdf5")]) == 2
    assert not (tmp_path / "o.hdf5").exists()


def test_missing_filter_is_one_line_exit_2(tmp_path):
    """Without hdf5plugin (blocked in a subprocess) a Blosc2 file is named, not crashed on."""
    path = write_dataset(
        tmp_path / "b2.hdf5", n_demos=1, cameras=("agentview",), image_compression="blosc2"
    )
    block = tmp_path / "block"
    block.mkdir()
    (block / "hdf5plugin.py").write_text("raise ImportError('hdf5plugin blocked for this test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), os.path.join(REPO, "src")]))
    env.pop("HDF5_PLUGIN_PATH", None)
    script = "import sys; from demoset.cli.main import main; sys.exit(main(sys.argv[1:]))"
    for args in (["compress", path, "--out", str(tmp_path / "o.hdf5"), "--compression", "none"],):
        proc = subprocess.run(
            [sys.executable, "-c", script, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "blosc2" in lines[0] and "hdf5plugin" in lines[0] and "agentview_image" in lines[0]
