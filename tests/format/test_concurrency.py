"""Concurrent access: readers while a writer appends, two writers, HDF5 lock errors.

Real processes throughout: one writer appending demos in follow mode and four readers
(DemoFile in swmr mode, the `demoset info` / `validate` CLI, the SequenceDataset with
refresh, and a plain DemoFile) running at the same time. Every demo a reader sees must
be complete and hold exactly the data the writer was given.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from demoset.errors import FileLockedError, WriteError
from demoset.format import DatasetWriter, open_dataset, validate

ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {}}
N_DEMOS = 12

COMMON = r"""
import hashlib, json, os, sys, time
import numpy as np


def demo_data(i):
    rng = np.random.default_rng(500 + i)
    n = int(rng.integers(5, 40))
    return {
        "actions": rng.uniform(-1, 1, (n, 4)),
        "obs/eef": rng.standard_normal((n, 3)).astype(np.float32),
        "obs/cam_image": rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8),
        "obs/wrist_image": rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8),
        "states": rng.standard_normal((n, 5)),
    }


def number(demo):
    return int(demo.split("_")[1])
"""

WRITER = r"""
from demoset.format import DatasetWriter
path, count, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with DatasetWriter(path, mode="a", swmr=True, image_compression="gzip") as w:
    for i in range(1, count):
        d = demo_data(i)
        w.add_demo(d["actions"], obs={"eef": d["obs/eef"], "cam_image": d["obs/cam_image"],
                                      "wrist_image": d["obs/wrist_image"]},
                   states=d["states"], derive_next_obs=True)
        with open(log, "a") as f:
            f.write(f"demo_{i}\n")
        time.sleep(0.03)
"""

READER = r"""
import contextlib, io, traceback
role, path, done_flag = sys.argv[1], sys.argv[2], sys.argv[3]
from demoset.format import open_dataset
stats = {"role": role, "passes": 0, "demos_seen": [], "failures": []}


def check_demofile(df):
    demos = df.demos
    assert demos == [f"demo_{i}" for i in range(len(demos))], demos
    for demo in demos:
        want = demo_data(number(demo))
        assert df.num_samples(demo) == len(want["actions"]), demo
        for key, value in want.items():
            got = df.read(demo, key)
            assert got.dtype == value.dtype and np.array_equal(got, value), (demo, key)
        nxt = df.read(demo, "next_obs/eef")
        assert np.array_equal(nxt[:-1], want["obs/eef"][1:]), demo
    return len(demos)


def one_pass():
    if role == "demofile_swmr":
        with open_dataset(path, swmr=True) as df:
            return check_demofile(df)
    if role == "demofile_plain":
        with open_dataset(path) as df:
            return check_demofile(df)
    if role == "cli":
        from demoset.cli.main import main
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["info", path, "--json"])
        assert code == 0, err.getvalue()
        info = json.loads(out.getvalue())
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", path])
        assert code == 0, out.getvalue() + err.getvalue()
        return int(info["num_demos"])
    if role == "sequence":
        global sequence
        from demoset.loader import SequenceDataset
        if sequence is None:
            # two image keys read from the file: gathered side by side on the batch's
            # threads, each in the reader session the batch holds while commits go on
            sequence = SequenceDataset(path, obs_keys=["eef", "cam_image", "wrist_image"],
                                       dataset_keys=["actions"], seq_length=3,
                                       cache_mode="low_dim", swmr=True, stats_cache=False)
        else:
            sequence.refresh()
        # windows in order: each demo's steps t = 0..n-1, actions[t:t+3] padded with the last
        expected = []
        for demo in sequence.demos:
            actions = demo_data(number(demo))["actions"]
            n = len(actions)
            assert sequence.demo_lengths[demo] == n, demo
            for t in range(n):
                expected.append(actions[[min(t + k, n - 1) for k in range(3)]])
        assert len(sequence) == len(expected), (len(sequence), len(expected))
        for i, want in enumerate(expected):
            got = sequence[i]["actions"]
            assert np.array_equal(got, want.astype(got.dtype)), i
        batch = sequence.get_batch(np.arange(len(sequence)))
        i = 0
        for demo in sequence.demos:
            data = demo_data(number(demo))
            n = len(data["actions"])
            for t in range(n):
                steps = [min(t + k, n - 1) for k in range(3)]
                for key in ("cam_image", "wrist_image"):
                    assert np.array_equal(batch["obs"][key][i], data[f"obs/{key}"][steps]), (i, key)
                i += 1
        return len(sequence.demos)
    raise SystemExit(f"unknown role {role}")


sequence = None
from demoset.loader import SequenceDataset  # noqa: F401 - import before saying ready
open(f"{done_flag}.{role}.ready", "w").close()
while True:
    finished = os.path.exists(done_flag)
    try:
        seen = one_pass()
        stats["demos_seen"].append(seen)
        stats["passes"] += 1
    except BaseException as exc:  # every failure is recorded, whatever its kind
        stats["failures"].append(traceback.format_exc(limit=3)[-1500:])
        if len(stats["failures"]) > 3:
            break
    if finished:
        break
    time.sleep(0.05)
print(json.dumps(stats))
"""


def _script(body: str) -> str:
    return COMMON + textwrap.dedent(body)


def test_readers_never_see_a_partial_demo(tmp_path):
    path = str(tmp_path / "live.hdf5")
    log = str(tmp_path / "writer.log")
    done = str(tmp_path / "done")
    shared: dict = {}
    exec(COMMON, shared)  # the same demo_data as the child processes
    first = shared["demo_data"](0)
    with DatasetWriter(path, env_meta=ENV, image_compression="gzip") as w:
        w.add_demo(
            first["actions"],
            obs={k: first[f"obs/{k}"] for k in ("eef", "cam_image", "wrist_image")},
            states=first["states"],
            derive_next_obs=True,
        )
    roles = ["demofile_swmr", "cli", "sequence", "demofile_plain"]
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", _script(READER), role, path, done],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    deadline = time.monotonic() + 180
    while not all(os.path.exists(f"{done}.{role}.ready") for role in roles):
        assert time.monotonic() < deadline, "readers did not start"
        assert all(proc.poll() is None for proc in readers), "a reader died while starting"
        time.sleep(0.05)
    writer = subprocess.run(
        [sys.executable, "-c", _script(WRITER), path, str(N_DEMOS), log],
        capture_output=True,
        text=True,
        timeout=300,
    )
    with open(done, "w"):
        pass
    results = []
    for proc in readers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert writer.returncode == 0, writer.stderr[-3000:]
    for res in results:
        assert res["failures"] == [], (res["role"], res["failures"])
        seen = res["demos_seen"]
        assert seen == sorted(seen), (res["role"], seen)  # demos only ever appear
        assert seen[-1] == N_DEMOS, (res["role"], seen)  # the last pass sees every demo
        assert res["passes"] >= 2, res
    assert any(len(set(res["demos_seen"])) > 2 for res in results), "readers ran during writing"
    assert validate(path) == []


HOLD_WRITER = r"""
import sys, time
from demoset.format import DatasetWriter
w = DatasetWriter(sys.argv[1], mode="a", swmr=sys.argv[2] == "1")
print("holding", flush=True)
sys.stdin.readline()
w.close()
"""

HOLD_H5PY = r"""
import sys, h5py
f = h5py.File(sys.argv[1], "a")
print("holding", flush=True)
sys.stdin.readline()
f.close()
"""


def _hold(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "holding", proc.stderr.read()
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()


def _file_sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("follow", [False, True])
def test_second_writer_is_refused(make_dataset, follow):
    path = make_dataset(n_demos=3)
    holder = _hold(HOLD_WRITER, path, "1" if follow else "0")
    try:
        before = _file_sha(path)
        with pytest.raises(WriteError, match="another demoset writer") as err:
            DatasetWriter(path, mode="a")
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(WriteError, match="another demoset writer"):
            DatasetWriter(path, env_meta=ENV, overwrite=True)  # would replace the file
        with pytest.raises(WriteError, match="another demoset writer"):
            from demoset.masks import create_filter_key

            create_filter_key(path, "train", ["demo_0"])
        assert _file_sha(path) == before
        with open_dataset(path) as df:  # readers are welcome meanwhile
            assert df.demos == ["demo_0", "demo_1", "demo_2"]
    finally:
        _release(holder)
    assert validate(path) == []


def test_hdf5_file_locking_errors_are_explained(make_dataset, capsys):
    path = make_dataset(n_demos=2)
    holder = _hold(HOLD_H5PY, path)
    try:
        with pytest.raises(FileLockedError) as err:
            open_dataset(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message
        assert "another process has it open for writing" in message and "wait" in message
        with pytest.raises(WriteError, match="another program has this file open for writing"):
            DatasetWriter(path, mode="a")
        from demoset.cli.main import main

        capsys.readouterr()
        assert main(["validate", str(path)]) == 2
        err_text = capsys.readouterr().err
        assert err_text.count("\n") == 1 and "open for writing" in err_text
        from demoset.errors import DemosetError
        from demoset.loader import SequenceDataset

        with pytest.raises(DemosetError, match="open for writing|held the file for writing"):
            SequenceDataset(path, obs_keys=["object"], swmr=False)
    finally:
        _release(holder)
    with open_dataset(path) as df:
        assert len(df.demos) == 2


def test_reader_waits_for_a_commit_instead_of_failing(tmp_path):
    """A reader arriving while a commit copies its journal waits (the gate), then reads."""
    from demoset.format.locking import Turnstile

    path = str(tmp_path / "d.hdf5")
    with DatasetWriter(path, env_meta=ENV) as w:
        w.add_demo(np.zeros((4, 2)))
    gate = Turnstile(path)
    gate.close_gate(5)  # what a committer does while it copies
    code = (
        "import sys, time; from demoset.format import open_dataset\n"
        "print('opening', flush=True)\n"
        "t = time.monotonic(); df = open_dataset(sys.argv[1]); print(len(df.demos), time.monotonic() - t)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "opening"
    time.sleep(0.5)
    assert proc.poll() is None, "the reader should wait at the gate"
    gate.release()
    gate.close()
    out, _ = proc.communicate(timeout=60)
    demos, waited = out.split()
    assert demos == "1" and float(waited) > 0.3


def test_plain_h5py_reader_sees_committed_state_between_commits(tmp_path):
    """robomimic reads with plain h5py: between commits the file is whole and readable."""
    path = str(tmp_path / "d.hdf5")
    with DatasetWriter(path, env_meta=ENV) as w:
        for i in range(5):
            w.add_demo(np.full((3 + i, 2), i, dtype=np.float64))
            with h5py.File(path, "r") as f:  # while the writer still has the file open
                assert sorted(f["data"].keys()) == [f"demo_{k}" for k in range(i + 1)]
                assert f["data"].attrs["total"] == sum(3 + k for k in range(i + 1))
                assert "demoset_staging" not in f
