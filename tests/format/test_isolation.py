"""Bounded time on files that make HDF5 loop forever: readers run in a forked child.

The damaged files are made here from files the test writes: `damage_global_heap` zeroes
the size of the free-space record of one global heap collection (the heap that holds vlen
strings such as env_args, model_file and ep_meta). HDF5 2.0.0 (h5py 3.16) then loops
forever in C when it reads any attribute stored in that heap; the fuzz found the same
state after a flipped bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from demoset.errors import FileAccessError, LayoutError, UnsafeFileError
from demoset.format import preflight, run_isolated, validate
from demoset.format.isolation import beat

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))  # so a child process can import tests.*
STALL = 1.0  # seconds without progress before a child is killed, in these tests
SLACK = 15.0  # what a command may take beyond the stall limit on a busy 2-core machine


# ---------------------------------------------------------------------------- the damage
def global_heap_collections(path) -> list[int]:
    """File offsets of every global heap collection ("GCOL" signature) in the file."""
    data = open(path, "rb").read()
    found, at = [], data.find(b"GCOL")
    while at >= 0:
        found.append(at)
        at = data.find(b"GCOL", at + 4)
    return found


def damage_global_heap(path, which: int = 0) -> int:
    """Set the size of the free-space object of the `which`-th global heap collection to 0.

    A collection is "GCOL", version, 3 reserved bytes, its size (8 bytes), then objects:
    index (2 bytes), reference count (2), reserved (4), size (8), data padded to 8 bytes;
    index 0 is the free space at the end. Returns the offset changed (-1: no such heap).
    """
    starts = global_heap_collections(path)
    if which >= len(starts):
        return -1
    with open(path, "r+b") as f:
        start = starts[which]
        f.seek(start + 8)
        (size,) = struct.unpack("<Q", f.read(8))
        at = start + 16
        while at + 16 <= start + size:
            f.seek(at)
            index, _, _, obj_size = struct.unpack("<HHIQ", f.read(16))
            if index == 0:
                f.seek(at + 8)
                f.write(b"\0" * 8)
                return at + 8
            at += 16 + (obj_size + 7) // 8 * 8
    return -1


def heap_damaged_dataset(tmp_path, name: str = "damaged.hdf5", which: int = 1) -> str:
    """A robomimic-layout file whose heap `which` is damaged.

    Heap 0 holds data/env_args, heap 1 every demo's model_file, heap 2 demo_0's ep_meta
    (in the order the writer stores them).
    """
    sys.path.insert(0, REPO_ROOT)
    from tests.helpers import write_dataset

    path = str(tmp_path / name)
    write_dataset(path, n_demos=3, min_len=4, max_len=6)
    with h5py.File(path, "a") as f:
        f["data/demo_0"].attrs["ep_meta"] = json.dumps({"lang": "lift the cube"})
    assert len(global_heap_collections(path)) == 3
    assert damage_global_heap(path, which) > 0
    return path


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


HEAP_ATTRIBUTE = {0: "/data (attribute env_args)", 1: "(attribute model_file)", 2: "ep_meta"}


@pytest.mark.parametrize("which", [0, 1, 2])
def test_preflight_and_validate_end_on_a_heap_that_hangs_hdf5(tmp_path, which):
    path = heap_damaged_dataset(tmp_path, which=which)
    before = digest(path)
    start = time.monotonic()
    with pytest.raises(UnsafeFileError, match="HDF5 stopped responding") as caught:
        preflight(path, stall=STALL)
    assert time.monotonic() - start < STALL + SLACK
    message = str(caught.value)
    assert HEAP_ATTRIBUTE[which] in message and path in message and "\n" not in message
    if which == 0:  # validate walks the same way (the CLI test covers the model_file heap)
        with pytest.raises(UnsafeFileError, match=r"while reading /data \(attribute env_args"):
            run_isolated(validate, path, path=path, stall=STALL)
    assert digest(path) == before


def test_cli_info_and_validate_exit_2_with_one_line_and_repair_salvages(tmp_path):
    """The acceptance test of the issue: no hang, one line, exit 2, the file untouched."""
    path = heap_damaged_dataset(tmp_path, which=1)
    before = digest(path)
    env = dict(os.environ, DEMOSET_STALL_SECONDS=str(STALL))

    def demoset(*args):
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "demoset.cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        return proc, time.monotonic() - start

    for command in ("info", "validate"):
        proc, took = demoset(command, path)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "HDF5 stopped responding" in proc.stderr and path in proc.stderr
        assert took < STALL + SLACK, (command, took)
    assert "/data/demo_0 (attribute model_file)" in proc.stderr  # validate names the spot
    assert sorted(os.listdir(tmp_path)) == ["damaged.hdf5"]
    # repair leaves out what HDF5 hangs on (one stall per damaged attribute) and keeps the rest
    out = tmp_path / "repaired.hdf5"
    proc, took = demoset("repair", path, "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["kept"] == ["demo_0", "demo_1", "demo_2"]
    assert [d[0] for d in report["dropped"]] == [
        f"/data/demo_{k}.attrs[model_file]" for k in range(3)
    ]
    assert took < 3 * STALL + SLACK
    assert validate(out) == [] and preflight(out) == []
    with h5py.File(out, "r") as f:
        assert f["data/demo_0"].attrs["ep_meta"] == json.dumps({"lang": "lift the cube"})
        assert "model_file" not in f["data/demo_1"].attrs
    assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["damaged.hdf5", "repaired.hdf5"]


def test_no_isolation_flag_reads_in_process(tmp_path, capsys):
    from demoset.cli.main import main

    sys.path.insert(0, REPO_ROOT)
    from tests.helpers import write_dataset

    path = write_dataset(tmp_path / "ok.hdf5", n_demos=2)
    assert main(["info", path, "--json", "--no-isolation"]) == 0
    in_process = json.loads(capsys.readouterr().out)
    assert main(["info", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == in_process
    assert main(["validate", path, "--no-isolation"]) == 0
    assert main(["validate", path]) == 0
    assert "OK" in capsys.readouterr().out


def test_preflight_reads_vlen_data_outside_the_layout(tmp_path):
    """The walk covers every object: a vlen array in a group no layout check reads."""
    path = str(tmp_path / "other.hdf5")
    with h5py.File(path, "w") as f:
        f.create_dataset("notes/text", data=["a note"] * 5, dtype=h5py.string_dtype())
        f["plain"] = np.arange(4)
    assert preflight(path) == []
    assert damage_global_heap(path, 0) > 0
    with pytest.raises(UnsafeFileError, match="/notes/text"):
        preflight(path, stall=STALL)


def test_preflight_of_a_clean_file_and_an_unreadable_one(tmp_path):
    sys.path.insert(0, REPO_ROOT)
    from tests.helpers import write_dataset

    path = write_dataset(tmp_path / "ok.hdf5", n_demos=2, cameras=("agentview",))
    assert preflight(path) == []
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(FileAccessError, match="not an HDF5 file"):
        preflight(tmp_path / "junk.hdf5")


# ---------------------------------------------------------------------------- the mechanism
def test_result_and_errors_come_back_from_the_child():
    assert run_isolated(lambda a, b=0: {"sum": a + b, "pid": os.getpid()}, 2, b=3)["sum"] == 5
    assert run_isolated(os.getpid) != os.getpid()

    def layout_error():
        raise LayoutError("bad thing", "/x/file.hdf5", "/data/demo_1")

    with pytest.raises(LayoutError) as caught:
        run_isolated(layout_error)
    assert (caught.value.path, caught.value.h5path, caught.value.message) == (
        "/x/file.hdf5",
        "/data/demo_1",
        "bad thing",
    )

    def bug():
        raise ValueError("a bug in demoset")

    with pytest.raises(ValueError, match="a bug in demoset") as caught:
        run_isolated(bug)
    assert any("isolated child" in note for note in caught.value.__notes__)


def test_a_child_without_progress_is_killed_and_its_output_removed(tmp_path):
    partial = tmp_path / "partial.hdf5"

    def stuck():
        partial.write_bytes(b"half")
        beat("/data/demo_7", "attribute model_file")
        time.sleep(600)

    start = time.monotonic()
    with pytest.raises(UnsafeFileError) as caught:
        run_isolated(stuck, path="f.hdf5", stall=0.5, cleanup=[partial])
    assert time.monotonic() - start < 0.5 + SLACK
    assert str(caught.value) == (
        "f.hdf5: HDF5 stopped responding for 0.5 s while reading /data/demo_7 "
        "(attribute model_file): the file is damaged (HDF5 loops forever on some damage); "
        "`demoset repair` salvages what it can"
    )
    assert not partial.exists()


def test_progress_keeps_a_slow_child_alive_and_reaches_the_parent():
    seen = []

    def slow(progress):
        for i in range(8):
            time.sleep(0.15)
            progress(i + 1, 8)
        return "done"

    assert run_isolated(slow, stall=0.5, progress=lambda d, t: seen.append((d, t))) == "done"
    assert seen[-1] == (8, 8) and seen == sorted(seen)


def test_a_wait_outside_hdf5_is_not_a_stall():
    """An fsync on a busy disk is slow, not stuck: `waiting` keeps the child alive."""
    from demoset.format.isolation import waiting

    def slow_fsync():
        with waiting("/", "saving the output"):
            time.sleep(1.2)
        return "saved"

    assert run_isolated(slow_fsync, stall=0.3) == "saved"


def test_a_child_killed_by_a_signal_is_a_clear_error():
    def crash():
        beat("/data/demo_0/actions", "array")
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(
        UnsafeFileError, match=r"HDF5 crashed \(SIGKILL\) while reading /data/demo_0"
    ):
        run_isolated(crash, path="f.hdf5")


def test_a_stuck_child_dies_with_its_parent(tmp_path):
    """A parent killed with SIGKILL must not leave a child spinning in HDF5 forever."""
    code = (
        "import os, time\n"
        "from demoset.format import run_isolated\n"
        "def stuck():\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(600)\n"
        "run_isolated(stuck, stall=600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    state = "R"
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state in ("gone", "Z", "X"):
            break
        time.sleep(0.05)
    assert state in ("gone", "Z", "X"), f"child {child} still {state} after its parent died"


def test_stall_limit_comes_from_the_environment(monkeypatch):
    from demoset.format.isolation import DEFAULT_STALL_SECONDS, stall_seconds

    monkeypatch.delenv("DEMOSET_STALL_SECONDS", raising=False)
    assert stall_seconds() == DEFAULT_STALL_SECONDS == 60
    monkeypatch.setenv("DEMOSET_STALL_SECONDS", "2.5")
    assert stall_seconds() == 2.5 and stall_seconds(7) == 7
    monkeypatch.setenv("DEMOSET_STALL_SECONDS", "soon")
    assert stall_seconds() == DEFAULT_STALL_SECONDS


def test_convert_commands_refuse_a_file_that_hangs_hdf5(tmp_path):
    """Converters read their input in-process, after an isolated preflight of its metadata."""
    path = heap_damaged_dataset(tmp_path, which=1)
    before = digest(path)
    env = dict(os.environ, DEMOSET_STALL_SECONDS=str(STALL))
    for source in ("momart", "d4rl"):
        out = tmp_path / f"out_{source}.hdf5"
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "demoset.cli.main", "convert", source, path, "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 2, (source, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "HDF5 stopped responding" in proc.stderr
        assert time.monotonic() - start < STALL + SLACK
        assert not out.exists()
    assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["damaged.hdf5"]
