"""Crash safety: a writer killed (SIGKILL) at any moment loses no completed demo.

A driver process (single-threaded, so forking it is safe) forks writers and kills them:
at random moments, or exactly before each file-system write of one commit. After every
kill this test opens the file, validates it, repairs it into a new file and checks every
demo bit for bit against the data the writer was given. The writer logs a checksum of
each demo after `add_demo` returns, so "completed before the kill" is what it says.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from demoset.edit import merge, subset
from demoset.format import DatasetWriter, open_dataset, validate
from demoset.format.journal import pending_journal
from demoset.masks import create_filter_key, list_filter_keys
from demoset.repair import repair

ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {}}


# --------------------------------------------------------------------------- shared with children
def demo_data(i: int) -> dict:
    """Demo number i, the same in every process: flat {"actions": ..., "obs/eef": ...}."""
    rng = np.random.default_rng(1000 + i)
    n = int(rng.integers(3, 30))
    obs = {
        "eef": rng.standard_normal((n, 3)).astype(np.float32),
        "cam_image": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
    }
    flat = {
        "actions": rng.uniform(-1, 1, (n, 4)),
        "rewards": rng.random(n),
        "dones": (np.arange(n) == n - 1).astype(np.int64),
        "states": rng.standard_normal((n, 6)),
    }
    for key, value in obs.items():
        flat[f"obs/{key}"] = value
        flat[f"next_obs/{key}"] = np.concatenate([value[1:], value[-1:]])
    return flat


def digest(arrays: dict) -> str:
    """Checksum of arrays by name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def add_demo(writer, i: int) -> str:
    flat = demo_data(i)
    return writer.add_demo(
        actions=flat["actions"],
        rewards=flat["rewards"],
        dones=flat["dones"],
        states=flat["states"],
        obs={k[4:]: v for k, v in flat.items() if k.startswith("obs/")},
        next_obs={k[9:]: v for k, v in flat.items() if k.startswith("next_obs/")},
        model_file="<mujoco model='crash'/>",
    )


DRIVER = r'''
import json, os, random, signal, sys, time
import numpy as np
from demoset.format import DatasetWriter

ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {}}
spec = json.loads(sys.argv[1])
random.seed(spec.get("seed", 0))


def log_line(fd, text):
    os.write(fd, (text + "\n").encode())


def run_child(fn, log_path):
    """Fork; the child runs fn(log_fd) and exits 0. Returns (pid, read end of a start pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(w, b"s")
            fn(fd)
            log_line(fd, "finished")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def kill_after(pid, r, delay):
    os.read(r, 1)
    os.close(r)
    time.sleep(delay)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return os.waitpid(pid, 0)[1]


def wait_done(pid, r):
    os.read(r, 1)
    os.close(r)
    return os.waitpid(pid, 0)[1]


def arm_kill_at(target):
    """Make the target-th os-level write (after arming) SIGKILL this process first."""
    state = {"armed": False, "n": 0}

    def hook(real):
        def wrapper(*args, **kwargs):
            if state["armed"]:
                state["n"] += 1
                if state["n"] == target:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapper

    for name in ("write", "pwrite", "ftruncate", "fsync", "unlink", "replace", "link", "rename"):
        setattr(os, name, hook(getattr(os, name)))
    return state


def calibrated_random(make_fn, paths, trials, out):
    """Run once uncut to time it, then `trials` runs killed at uniform random moments."""
    pid, r = run_child(make_fn(-1), paths(-1)[1])
    t0 = time.monotonic()
    wait_done(pid, r)
    full = time.monotonic() - t0
    for t in range(trials):
        path, log = paths(t)
        pid, r = run_child(make_fn(t), log)
        delay = random.uniform(0.0, full * 1.1)
        status = kill_after(pid, r, delay)
        out.append({"trial": t, "path": path, "log": log, "delay": delay, "full": full,
                    "status": status})


def main():
    exec(spec["shared"], globals())
    kind, work = spec["kind"], spec["dir"]
    results = []
    if kind == "append":
        def paths(t):
            d = os.path.join(work, f"t{t}")
            os.makedirs(d, exist_ok=True)
            return os.path.join(d, "demos.hdf5"), os.path.join(d, "log.txt")

        def make_fn(t):
            path = paths(t)[0]
            mode = "a" if t % 2 else "w"
            if mode == "a":
                with DatasetWriter(path, env_meta=ENV, overwrite=True) as w:
                    add_demo(w, 0)
                    add_demo(w, 1)

            def fn(fd):
                comp = "gzip" if t % 3 == 0 else None
                w = DatasetWriter(path, env_meta=ENV, mode=mode, swmr=(t % 4 < 2),
                                  image_compression=comp)
                start = len(w.demos) + (2 if mode == "a" else 0)
                for i in range(start, start + spec["demos"]):
                    name = add_demo(w, i)
                    log_line(fd, f"{name} {digest(demo_data(i))}")
                w.close()
                log_line(fd, "closed")
            return fn

        calibrated_random(make_fn, paths, spec["trials"], results)

    elif kind == "steps":
        template = spec["template"]

        def attempt(target):
            d = os.path.join(work, f"s{target}")
            os.makedirs(d, exist_ok=True)
            path, log = os.path.join(d, "demos.hdf5"), os.path.join(d, "log.txt")
            with open(template, "rb") as src, open(path, "wb") as dst:
                dst.write(src.read())

            def fn(fd):
                state = arm_kill_at(target)
                if spec["op"] == "append":
                    w = DatasetWriter(path, mode="a")
                    state["armed"] = True
                    add_demo(w, 2)
                    state["armed"] = False
                    w.close()
                else:
                    from demoset.masks import create_filter_key
                    state["armed"] = True
                    create_filter_key(path, "train", ["demo_2", "demo_0"], overwrite=True)
                    state["armed"] = False
                log_line(fd, f"op_done {state['n']}")

            pid, r = run_child(fn, log)
            status = wait_done(pid, r)
            return {"target": target, "path": path, "log": log, "status": status}

        dry = attempt(0)
        calls = int(open(dry["log"]).read().split()[1])
        # every write near the commit, and every few writes of the demo's arrays before it
        targets = sorted(set(range(1, calls + 1, 7)) | set(range(max(1, calls - 40), calls + 1)))
        results = [attempt(t) for t in targets] + [dry]

    elif kind == "masks":
        ops = spec["ops"]

        def paths(t):
            d = os.path.join(work, f"m{t}")
            os.makedirs(d, exist_ok=True)
            return os.path.join(d, "demos.hdf5"), os.path.join(d, "log.txt")

        def make_fn(t):
            path = paths(t)[0]
            with open(spec["template"], "rb") as src, open(path, "wb") as dst:
                dst.write(src.read())

            def fn(fd):
                from demoset import masks
                for k, op in enumerate(ops):
                    if op[0] == "create":
                        masks.create_filter_key(path, op[1], op[2], overwrite=True)
                    elif op[0] == "delete":
                        masks.delete_filter_key(path, op[1])
                    else:
                        masks.rename_filter_key(path, op[1], op[2], overwrite=True)
                    log_line(fd, f"op {k}")
            return fn

        calibrated_random(make_fn, paths, spec["trials"], results)

    elif kind == "call":
        import importlib

        module, _, func = spec["func"].rpartition(".")
        fn_obj = getattr(importlib.import_module(module), func)

        def paths(t):
            d = os.path.join(work, f"c{t}")
            os.makedirs(d, exist_ok=True)
            return os.path.join(d, "out.hdf5"), os.path.join(d, "log.txt")

        def make_fn(t):
            out = paths(t)[0]

            def fn(fd):
                fn_obj(*[out if a == "{out}" else a for a in spec["args"]], **spec["kwargs"])
            return fn

        calibrated_random(make_fn, paths, spec["trials"], results)
    print(json.dumps(results))


main()
'''


def write_demos_atomic(out: str, count: int) -> None:
    """A new file written with DatasetWriter(atomic=True): `count` demos and a filter key."""
    with DatasetWriter(out, env_meta=ENV, atomic=True) as w:
        for i in range(count):
            add_demo(w, i)
        w.set_filter_key("train", [f"demo_{i}" for i in range(0, count, 2)])


SHARED = "\n".join(
    textwrap.dedent(inspect.getsource(f)) for f in (demo_data, digest, add_demo, write_demos_atomic)
)


def run_driver(spec: dict, timeout: float = 240) -> list[dict]:
    spec = {**spec, "shared": "import hashlib\n" + SHARED}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- checks
def read_log(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def demo_digests(path: str) -> dict[str, str]:
    """{demo: checksum of every array as read back}, read with plain h5py (not demoset)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        data = f["data"]
        for demo in sorted(data, key=lambda name: int(name.split("_")[1])):
            arrays = {}
            data[demo].visititems(
                lambda name, obj, arrays=arrays: (
                    arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
            out[demo] = digest(arrays)
    return out


def expected_digest(demo: str) -> str:
    return digest(demo_data(int(demo.split("_")[1])))


def check_after_kill(
    path: str, logged: dict[str, str], out: str, validate_output: bool = True
) -> list[str]:
    """Everything promised after a kill; returns the demos the file holds."""
    with open_dataset(path):  # finishes a commit the kill interrupted, if any
        pass
    assert pending_journal(path) is None
    held = demo_digests(path)
    assert list(held) == [f"demo_{i}" for i in range(len(held))]
    for demo, checksum in logged.items():
        assert held.get(demo) == checksum, f"completed {demo} lost or changed"
    for demo, checksum in held.items():
        assert checksum == expected_digest(demo), f"{demo} holds other data than written"
    findings = validate(path)
    allowed = {"incomplete_demo"} | ({"no_demos"} if not held else set())
    assert all(f.code in allowed for f in findings), [str(f) for f in findings]
    before = file_digest(path)
    report = repair(path, out)
    assert file_digest(path) == before
    assert report.kept == list(held)
    assert all(h5path.startswith("/demoset_staging") for h5path, _ in report.dropped)
    if validate_output:
        assert [f for f in validate(out) if f.code != "no_demos"] == []
    assert demo_digests(out) == held
    return list(held)


# --------------------------------------------------------------------------- tests
def test_writer_killed_at_50_random_moments(tmp_path):
    results = run_driver({"kind": "append", "dir": str(tmp_path), "trials": 50, "demos": 6})
    assert len(results) == 50
    killed_mid_write = 0
    for res in results:
        lines = read_log(res["log"])
        logged = dict(line.split() for line in lines if line.startswith("demo_"))
        if not os.path.exists(res["path"]):
            assert not logged, "demos were reported written but the file is gone"
            continue
        held = check_after_kill(
            res["path"], logged, res["path"] + ".repaired", validate_output=res["trial"] % 5 == 0
        )
        if "closed" not in lines:
            killed_mid_write += 1
        if "closed" in lines:
            assert len(held) == len(logged) + (2 if res["trial"] % 2 else 0)
    assert killed_mid_write >= 15, "most kills should land while demos are being written"


@pytest.mark.parametrize("op", ["append", "mask"])
def test_killed_before_each_write_of_a_commit(tmp_path, op):
    template = str(tmp_path / "template.hdf5")
    with DatasetWriter(template, env_meta=ENV) as w:
        for i in range(3 if op == "mask" else 2):
            add_demo(w, i)
        w.set_filter_key("train", ["demo_0", "demo_1"])
    results = run_driver({"kind": "steps", "dir": str(tmp_path), "template": template, "op": op})
    assert len(results) > 5, "the operation should take several writes"
    assert read_log(results[-1]["log"])[0].startswith("op_done")
    outcomes = set()
    before = demo_digests(template)
    for res in results[:-1]:
        assert res["status"] == signal.SIGKILL, res
        with open_dataset(res["path"]):  # finishes an interrupted commit
            pass
        held = demo_digests(res["path"])
        assert pending_journal(res["path"]) is None
        assert {d: held[d] for d in before} == before
        assert [f for f in validate(res["path"])] == []
        if op == "append":
            assert list(held) in (["demo_0", "demo_1"], ["demo_0", "demo_1", "demo_2"])
            outcomes.add(len(held))
            if len(held) == 3:
                assert held["demo_2"] == expected_digest("demo_2")
        else:
            keys = list_filter_keys(res["path"])
            assert keys["train"] in (["demo_0", "demo_1"], ["demo_2", "demo_0"]), keys
            outcomes.add(tuple(keys["train"]))
    assert len(outcomes) == 2, "kills both before and after the commit point were tried"


def test_filter_key_edits_killed_mid_edit(tmp_path):
    template = str(tmp_path / "template.hdf5")
    with DatasetWriter(template, env_meta=ENV) as w:
        for i in range(6):
            add_demo(w, i)
    create_filter_key(template, "train", ["demo_0", "demo_1", "demo_2"])
    ops = []
    rng = np.random.default_rng(0)
    for k in range(12):
        demos = sorted(
            f"demo_{i}" for i in rng.choice(6, size=int(rng.integers(1, 6)), replace=False)
        )
        ops.append(["create", f"k{k % 3}", demos])
        if k % 4 == 3:
            ops.append(["rename", f"k{k % 3}", f"r{k % 2}"])
        if k % 5 == 4:
            ops.append(["delete", "train"] if k == 4 else ["create", "train", demos[:1]])
    states = [{"train": ["demo_0", "demo_1", "demo_2"]}]
    for op in ops:
        state = dict(states[-1])
        if op[0] == "create":
            state[op[1]] = op[2]
        elif op[0] == "delete":
            del state[op[1]]
        else:
            state[op[2]] = state.pop(op[1])
        states.append(state)
    originals = demo_digests(template)
    results = run_driver(
        {"kind": "masks", "dir": str(tmp_path), "template": template, "ops": ops, "trials": 20}
    )
    for res in results:
        done = sum(1 for line in read_log(res["log"]) if line.startswith("op "))
        keys = list_filter_keys(res["path"])  # opens through demoset first: finishes a commit
        assert demo_digests(res["path"]) == originals
        assert validate(res["path"]) == []
        allowed = [states[done]] + ([states[done + 1]] if done + 1 < len(states) else [])
        assert keys in allowed, (done, keys)


def _check_new_file_outputs(results: list[dict], reference: str) -> int:
    """Each killed run left its output complete (== reference) or absent; returns # absent."""
    expected = demo_digests(reference)
    expected_keys = list_filter_keys(reference)
    absent = 0
    for res in results:
        out = res["path"]
        if not os.path.exists(out):
            absent += 1
            assert "finished" not in read_log(res["log"])
            continue
        assert demo_digests(out) == expected
        assert list_filter_keys(out) == expected_keys
        assert validate(out) == []
    return absent


def _make_source(tmp_path, name: str, count: int, first: int = 0) -> str:
    path = str(tmp_path / name)
    with DatasetWriter(path, env_meta=ENV) as w:
        for i in range(first, first + count):
            add_demo(w, i)
        w.set_filter_key("train", w.demos[::2])
    return path


@pytest.mark.parametrize("what", ["atomic_writer", "subset", "merge"])
def test_new_file_commands_killed_leave_output_complete_or_absent(tmp_path, what):
    if what == "atomic_writer":
        spec = {"func": "__main__.write_demos_atomic", "args": ["{out}", 40], "kwargs": {}}
        reference = str(tmp_path / "reference.hdf5")
        write_demos_atomic(reference, 40)
    elif what == "subset":
        src = _make_source(tmp_path, "src.hdf5", 40)
        spec = {
            "func": "demoset.edit.subset",
            "args": [src, "{out}"],
            "kwargs": {"filter_key": "train"},
        }
        reference = str(tmp_path / "reference.hdf5")
        subset(src, reference, filter_key="train")
    else:
        a = _make_source(tmp_path, "a.hdf5", 20)
        b = _make_source(tmp_path, "b.hdf5", 20, first=20)
        spec = {"func": "demoset.edit.merge", "args": [[a, b], "{out}"], "kwargs": {}}
        reference = str(tmp_path / "reference.hdf5")
        merge([a, b], reference)
        # merge records input paths; the outputs of the killed runs name the same inputs
    sources = {p: file_digest(p) for p in tmp_path.glob("*.hdf5")}
    results = run_driver({"kind": "call", "dir": str(tmp_path / "runs"), "trials": 8, **spec})
    _check_new_file_outputs(results, reference)
    for p, checksum in sources.items():
        assert file_digest(p) == checksum, f"{p} changed"


def test_cli_commands_killed_leave_output_complete_or_absent(tmp_path):
    """`demoset subset`, `merge` and `convert d4rl` killed mid-write: output whole or absent."""
    import random
    import time

    import h5py

    from demoset.convert.d4rl import convert_d4rl

    a = _make_source(tmp_path, "a.hdf5", 60)
    b = _make_source(tmp_path, "b.hdf5", 60, first=60)
    d4rl = str(tmp_path / "d4rl.hdf5")
    rng = np.random.default_rng(0)
    steps = 20000
    with h5py.File(d4rl, "w") as f:
        f["observations"] = rng.standard_normal((steps, 17)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (steps, 6)).astype(np.float32)
        f["rewards"] = rng.random(steps).astype(np.float32)
        f["terminals"] = (np.arange(steps) % 200 == 199).astype(bool)
        f["timeouts"] = np.zeros(steps, dtype=bool)
    sources = {p: file_digest(p) for p in (a, b, d4rl)}
    references = {
        "subset": lambda out: subset(a, out, filter_key="train"),
        "merge": lambda out: merge([a, b], out),
        "d4rl": lambda out: convert_d4rl(d4rl, out),
    }
    commands = {
        "subset": ["subset", a, "--filter-key", "train", "--out"],
        "merge": ["merge", a, b, "--out"],
        "d4rl": ["convert", "d4rl", d4rl, "--out"],
    }
    random.seed(1)
    for name, args in commands.items():
        reference = str(tmp_path / f"{name}_reference.hdf5")
        references[name](reference)
        for k in range(2):
            work = tmp_path / f"{name}_{k}"
            work.mkdir()
            out = str(work / "out.hdf5")
            proc = subprocess.Popen(
                [sys.executable, "-m", "demoset.cli.main", *args, out],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while not any(p.name.endswith(".partial") for p in work.iterdir()):
                assert proc.poll() is None or os.path.exists(out), "finished without output"
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            time.sleep(random.uniform(0.0, 0.05))  # kill while the output is being written
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if os.path.exists(out):
                assert demo_digests(out) == demo_digests(reference)
                assert validate(out) == validate(reference)
            assert [p.name for p in work.iterdir() if not p.name.endswith(".partial")] in (
                [],
                ["out.hdf5"],
            )
    for p, checksum in sources.items():
        assert file_digest(p) == checksum
