"""The `demoset` command: every foundation command, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.format import open_dataset

DEMOSET = [sys.executable, "-m", "demoset.cli.main"]


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_plain_and_json(capsys, make_dataset):
    path = make_dataset(
        n_demos=4, cameras=("agentview",), filter_keys={"train": ["demo_0", "demo_2"]}
    )
    code, out, _ = run(capsys, "info", path)
    assert code == 0
    assert "demos        4" in out and "train (2)" in out and "obs/agentview_image: uint8" in out
    code, out, _ = run(capsys, "info", "--dataset", path, "--filter_key", "train", "--json")
    s = json.loads(out)
    assert (
        s["num_demos"] == 2 and s["filter_key"] == "train" and s["env_meta"]["env_name"] == "Lift"
    )
    assert len(s["action_min"]) == 7 and s["length"]["min"] <= s["length"]["max"]
    code, out, _ = run(capsys, "info", path, "--verbose")
    assert "filter key train: demo_0, demo_2" in out and "demo_3 (" in out


def test_info_reports_out_of_range_actions(capsys, tmp_path):
    from demoset.format import DatasetWriter

    path = tmp_path / "r.hdf5"
    with DatasetWriter(path, env_meta={"env_name": "X", "type": 2, "env_kwargs": {}}) as w:
        w.add_demo(np.array([[5.0], [-2.0]]))
    code, out, _ = run(capsys, "info", path)
    assert code == 0 and "outside [-1, 1]" in out and "[-2]" in out


def test_validate_exit_codes(capsys, make_dataset):
    path = make_dataset(n_demos=3)
    assert run(capsys, "validate", path)[0] == 0
    with h5py.File(path, "a") as f:
        f["data"].attrs["total"] = 1
    code, out, _ = run(capsys, "validate", path)
    assert code == 1 and "/data: total is 1" in out
    code, out, _ = run(capsys, "validate", path, "--json")
    assert json.loads(out)["ok"] is False


def test_split_filter_size_and_mask_commands(capsys, make_dataset):
    path = make_dataset(n_demos=10, min_len=3, max_len=4)
    assert run(capsys, "split", "--dataset", path, "--ratio", "0.2")[0] == 0
    assert run(capsys, "filter-size", path, "--num_demos", "3", "6", "--random")[0] == 0
    code, out, _ = run(capsys, "mask", "list", path, "--json")
    keys = json.loads(out)
    assert len(keys["valid"]) == 2 and set(keys["3_demos"]) <= set(keys["6_demos"])
    assert (
        run(capsys, "mask", "create", path, "--name", "mine", "--demos", "demo_1", "demo_4")[0] == 0
    )
    assert run(capsys, "mask", "rename", path, "--name", "mine", "--to", "ours")[0] == 0
    assert run(capsys, "mask", "delete", path, "--name", "3_demos")[0] == 0
    code, out, _ = run(capsys, "mask", "list", path)
    assert "ours: 2 demos" in out and "3_demos" not in out


def test_subset_and_merge(capsys, tmp_path, make_dataset):
    a = make_dataset(name="a.hdf5", n_demos=4, cameras=("agentview",), image_compression="gzip")
    b = make_dataset(name="b.hdf5", n_demos=3, seed=5, filter_keys={"train": ["demo_1"]})
    run(capsys, "split", a, "--ratio", "0.5")
    sub = tmp_path / "sub.hdf5"
    assert run(capsys, "subset", a, "--filter-key", "valid", "--out", sub, "--renumber")[0] == 0
    with open_dataset(a) as src, open_dataset(sub) as out:
        valid = src.demos_for("valid")
        assert out.demos == ["demo_0", "demo_1"] and out.filter_key_demos("valid") == [
            "demo_0",
            "demo_1",
        ]
        for new, old in zip(out.demos, valid):
            np.testing.assert_array_equal(
                out.read(new, "obs/agentview_image"), src.read(old, "obs/agentview_image")
            )
        assert out.total == sum(src.num_samples(d) for d in valid)
        assert out.dataset("demo_0", "obs/agentview_image").compression == "gzip"
    merged = tmp_path / "m.hdf5"
    code, out_text, _ = run(capsys, "merge", a, sub, b, "--out", merged, "--allow-env-mismatch")
    assert code == 0
    with open_dataset(merged) as m:
        assert m.demos == [f"demo_{i}" for i in range(9)]
        assert m.filter_key_demos("from_a") == [f"demo_{i}" for i in range(4)]
        assert m.filter_key_demos("from_b") == ["demo_7", "demo_8"][:0] + [
            "demo_6",
            "demo_7",
            "demo_8",
        ]
        assert "demo_7" in m.filter_key_demos("train")
        with open_dataset(b) as src:
            np.testing.assert_array_equal(
                m.read("demo_8", "actions"), src.read("demo_2", "actions")
            )
    code, _, err = run(capsys, "merge", a, merged, "--out", merged)
    assert code == 2 and "exists" in err


def test_merge_refuses_other_environment(capsys, tmp_path, make_dataset):
    a = make_dataset(name="a.hdf5", n_demos=2)
    b = make_dataset(
        name="b.hdf5", n_demos=2, env_meta={"env_name": "Stack", "type": 1, "env_kwargs": {}}
    )
    code, _, err = run(capsys, "merge", a, b, "--out", tmp_path / "m.hdf5")
    assert code == 2 and "b.hdf5" in err and "differs" in err
    assert not (tmp_path / "m.hdf5").exists()


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("missing", ["info", "{p}"], "no such file"),
        ("text", ["info", "{p}"], "not an HDF5 file"),
        ("empty_h5", ["info", "{p}"], "/data: no 'data' group"),
        ("ok", ["info", "{p}", "--filter-key", "nope"], "/mask/nope: no filter key 'nope'"),
        ("ok", ["split", "{p}", "--filter-key", "nope"], "no filter key 'nope'"),
        (
            "ok",
            ["mask", "create", "{p}", "--name", "x", "--demos", "demo_77"],
            "/data/demo_77: no demo named",
        ),
        (
            "ok",
            ["subset", "{p}", "--demos", "demo_77", "--out", "{d}/o.hdf5"],
            "no demo named 'demo_77'",
        ),
        ("dir", ["validate", "{p}"], "is a directory"),
    ],
)
def test_user_mistakes_are_one_line_exit_2(capsys, tmp_path, make_dataset, setup, args, message):
    p = tmp_path / "f.hdf5"
    if setup == "text":
        p.write_text("not hdf5")
    elif setup == "empty_h5":
        h5py.File(p, "w").close()
    elif setup == "ok":
        p = make_dataset(name="f.hdf5", n_demos=2)
    elif setup == "dir":
        p.mkdir()
    before = open(p, "rb").read() if os.path.isfile(p) else None
    code, out, err = run(capsys, *[a.format(p=p, d=tmp_path) for a in args])
    assert code == 2
    assert err.count("\n") == 1 and str(p) in err and message in err, err
    assert "Traceback" not in err
    if before is not None:
        assert open(p, "rb").read() == before
    assert not (tmp_path / "o.hdf5").exists()


def test_locked_file_is_explained(tmp_path, make_dataset):
    path = make_dataset(n_demos=2)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import h5py, sys, time; f = h5py.File({str(path)!r}, 'a'); print('open', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        proc = subprocess.run(
            [*DEMOSET, "info", str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2
        assert (
            proc.stderr.count("\n") == 1
            and "another process has it open for writing" in proc.stderr
        )
    finally:
        holder.kill()
        holder.wait()


def test_info_is_fast_on_200_demos(tmp_path):
    from tests.helpers import write_dataset

    path = write_dataset(tmp_path / "big.hdf5", n_demos=200, min_len=100, max_len=200)
    start = time.perf_counter()
    proc = subprocess.run([*DEMOSET, "info", path], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and "demos        200" in proc.stdout
    print(f"demoset info on 200 demos: {elapsed:.2f} s (process start included)")


def test_info_does_not_import_heavy_dependencies():
    code = "import sys; from demoset.cli.main import build_parser; build_parser(); import demoset.summary; print(sorted(m for m in ('torch', 'robosuite', 'mujoco', 'matplotlib', 'imageio') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
