"""Full disks and read-only places: a clear one-line error, and the original intact.

The test mounts a 2 MB tmpfs (a real full file system, not a mock), and a tmpfs remounted
read-only (chmod would not do: these tests run as root, which ignores permission bits).
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import h5py
import numpy as np
import pytest

from demoset.cli.main import main as demoset_main
from demoset.errors import DemosetError, WriteError
from demoset.format import DatasetWriter, open_dataset, validate
from demoset.format.journal import pending_journal

ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {}}


def _mount(directory, *options: str) -> None:
    directory.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {proc.stderr.strip()}"
        )


def _umount(directory) -> None:
    if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB file system that fills up fast."""
    directory = tmp_path / "small"
    _mount(directory, "size=2m")
    yield directory
    _umount(directory)


@pytest.fixture
def read_only_fs(tmp_path):
    """A read-only file system holding one dataset, `demos.hdf5` (6 demos, a filter key)."""
    directory = tmp_path / "ro"
    _mount(directory, "size=4m")
    try:
        write(directory / "demos.hdf5", 6, filter_key=True)
        remount = subprocess.run(
            ["mount", "-o", "remount,ro", str(directory)], capture_output=True, text=True
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        yield directory
    finally:
        _umount(directory)


def demo(i: int, steps: int = 40, image: int = 24) -> dict:
    rng = np.random.default_rng(i)
    return {
        "actions": rng.uniform(-1, 1, (steps, 7)),
        "obs": {
            "eef": rng.standard_normal((steps, 3)),
            "cam_image": rng.integers(0, 256, (steps, image, image, 3), dtype=np.uint8),
        },
    }


def write(path, count: int, filter_key: bool = False, **kwargs) -> str:
    with DatasetWriter(path, env_meta=ENV, **kwargs) as w:
        for i in range(count):
            w.add_demo(**demo(i))
        if filter_key:
            w.set_filter_key("train", w.demos[::2])
    return str(path)


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fill(directory, leave: int = 0) -> None:
    """Take every free byte of the file system `directory` is on, but `leave` bytes."""
    stat = os.statvfs(directory)
    with open(directory / "filler", "wb", buffering=0) as f:
        if leave:
            f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave, 0))
            return
        for block in (b"\0" * 65536, b"\0" * 512):
            try:
                while True:
                    f.write(block)
            except OSError:
                pass


def assert_demos_intact(path, count: int) -> None:
    with open_dataset(path) as df:
        assert df.demos == [f"demo_{i}" for i in range(count)]
        for i, name in enumerate(df.demos):
            np.testing.assert_array_equal(df.read(name, "actions"), demo(i)["actions"])
            np.testing.assert_array_equal(
                df.read(name, "obs/cam_image"), demo(i)["obs"]["cam_image"]
            )
    assert validate(path) == []
    assert pending_journal(path) is None


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = demoset_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word.lower() in err.lower(), err


# --------------------------------------------------------------------------- full disk
def test_writer_stops_cleanly_when_the_disk_fills(small_fs):
    path = small_fs / "demos.hdf5"
    written = 0
    with pytest.raises(WriteError) as err:
        with DatasetWriter(path, env_meta=ENV) as w:
            for i in range(200):
                w.add_demo(**demo(i))
                written += 1
    assert "no space left on device" in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)
    assert written > 3
    assert_demos_intact(path, written)
    assert sorted(os.listdir(small_fs)) == ["demos.hdf5"]  # no journal, no temporary file


def test_append_on_a_full_disk_leaves_the_file_byte_for_byte(small_fs):
    path = write(small_fs / "demos.hdf5", 4, filter_key=True)
    fill(small_fs)
    before = sha(path)
    with pytest.raises(WriteError, match="no space left on device"):
        with DatasetWriter(path, mode="a") as w:
            w.add_demo(**demo(4, steps=200))
    assert sha(path) == before
    assert_demos_intact(path, 4)
    with pytest.raises(WriteError, match="no space left on device"):
        from demoset.masks import create_filter_key

        create_filter_key(path, "valid", ["demo_1", "demo_3"])
    assert sha(path) == before


def test_filter_key_cli_on_a_full_disk(small_fs, capsys):
    path = write(small_fs / "demos.hdf5", 4)
    fill(small_fs)
    before = sha(path)
    code, _, err = run_cli(capsys, "split", str(path), "--ratio", "0.5")
    assert_one_line_error(code, err, str(path), "no space left on device")
    assert sha(path) == before


@pytest.mark.parametrize("command", ["subset", "merge", "repair", "d4rl", "atomic_writer"])
def test_new_file_on_a_full_disk_is_absent(tmp_path, small_fs, capsys, command):
    src = write(tmp_path / "src.hdf5", 12, filter_key=True)
    other = write(tmp_path / "other.hdf5", 12)
    d4rl = tmp_path / "d4rl.hdf5"
    steps = 40000
    rng = np.random.default_rng(0)
    with h5py.File(d4rl, "w") as f:
        f["observations"] = rng.standard_normal((steps, 11)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (steps, 3)).astype(np.float32)
        f["rewards"] = rng.random(steps).astype(np.float32)
        f["terminals"] = np.arange(steps) % 100 == 99
    sources = {p: sha(p) for p in (src, other, d4rl)}
    fill(small_fs, leave=150_000)
    out = small_fs / "out.hdf5"
    if command == "atomic_writer":
        with pytest.raises(WriteError, match="no space left on device"):
            write(out, 40, atomic=True)
    else:
        args = {
            "subset": ["subset", src, "--filter-key", "train", "--out", str(out)],
            "merge": ["merge", src, other, "--out", str(out)],
            "repair": ["repair", src, "--out", str(out)],
            "d4rl": ["convert", "d4rl", str(d4rl), "--out", str(out)],
        }[command]
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, str(out), "no space left on device")
    assert os.listdir(small_fs) == ["filler"]
    for p, checksum in sources.items():
        assert sha(p) == checksum


# --------------------------------------------------------------------------- read-only
def test_read_only_place_refuses_writes_and_still_reads(read_only_fs, capsys):
    path = read_only_fs / "demos.hdf5"
    before = sha(path)
    with pytest.raises(WriteError, match="read-only") as err:
        DatasetWriter(path, mode="a")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(WriteError, match="not writable|read-only"):
        DatasetWriter(read_only_fs / "new.hdf5", env_meta=ENV)
    with pytest.raises(WriteError, match="not writable|read-only"):
        DatasetWriter(read_only_fs / "new.hdf5", env_meta=ENV, atomic=True)
    for args, words in [
        (["split", str(path)], [str(path), "read-only"]),
        (["mask", "delete", str(path), "--name", "train"], [str(path), "read-only"]),
        (["subset", str(path), "--filter-key", "train", "--out", str(read_only_fs / "o.hdf5")], []),
        (["repair", str(path), "--out", str(read_only_fs / "o.hdf5")], []),
    ]:
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, *words)
    code, out, _ = run_cli(capsys, "info", str(path))
    assert code == 0 and "demo" in out
    assert_demos_intact(path, 6)
    assert sha(path) == before
    assert os.listdir(read_only_fs) == ["demos.hdf5"]


def test_errors_are_demoset_errors(read_only_fs):
    """Every failure above is a DemosetError subclass, so the CLI turns it into one line."""
    with pytest.raises(DemosetError):
        DatasetWriter(read_only_fs / "demos.hdf5", mode="a")
