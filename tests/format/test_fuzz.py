"""Hostile and broken files: every entry point ends in a result or one clear DemosetError.

Damaged files are made from small valid seeds of each input layout (robomimic, D4RL, raw
robosuite, RoboTurk Pilot, Minari) by structural mutations that hypothesis chooses and
shrinks (wrong dtypes and shapes, attributes of the wrong type, huge num_samples and
dataspaces, demo names that look like paths, env_args that are not JSON, external links,
soft-link cycles and virtual datasets pointing outside the file) and by a seeded
byte-flipping and truncating loop. Each case runs in a worker process with an address-
space limit and per-call alarms, so a hang, a crash of the interpreter or unbounded memory
is caught and counted as a failure instead of taking the test run down.

The isolated entry points (the pre-flight `demoset.format.preflight`, and `demoset info`,
`validate`, `repair`, which read the file in a forked child) run on every case; the
in-process ones (DemoFile API, validate, SequenceDataset, repair, each converter) run only
when the pre-flight returned, as users are told to do with files from strangers. A case
fails when any entry point raises anything but a DemosetError with a non-empty one-line
message, runs past its time (a hang, wherever it is), dies, changes its input, writes a
file other than its output, or touches the files that links point to. An isolated child
that HDF5 leaves stuck ends in UnsafeFileError (exit 2) and is counted as "stalled".

`make test` runs a short version; `make fuzz` runs DEMOSET_FUZZ_CASES cases (slow mark).
The worker is this file run as a script: `python tests/format/test_fuzz.py --worker ROOT`.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import time
from collections import Counter

import pytest

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    given = None

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))  # so a child process can import tests.*
FORMATS = ("robomimic", "d4rl", "raw", "roboturk", "minari", "compressed")
TARGETS = {
    "robomimic": [
        "preflight",
        "cli_info",
        "cli_validate",
        "cli_repair",
        "walk",
        "validate",
        "sequence",
        "repair",
        "momart",
    ],
    "d4rl": ["preflight", "cli_info", "d4rl"],
    "raw": ["preflight", "raw", "validate"],
    "roboturk": ["preflight", "roboturk", "walk"],
    "minari": ["preflight", "minari"],
    "compressed": ["preflight", "cli_info", "walk", "validate", "sequence", "compress"],
}
ISOLATED = {"preflight", "cli_info", "cli_validate", "cli_repair"}
"""Entry points that read the file in a forked child (demoset.format.isolation); the others
read it in the worker itself and run only after the isolated pre-flight returned, as the
docs tell users to do with files from strangers."""
STALL_SECONDS = 5  # DEMOSET_STALL_SECONDS in the workers: isolated children stuck this long die
CALL_SECONDS = 20  # alarm per entry point
ISOLATED_CALL_SECONDS = 60  # isolated ones: repair restarts once per damaged part it leaves out
CASE_SECONDS = 120  # the parent's limit per case (all entry points)
STACK_DUMP_SECONDS = 90  # a case still running then has its stacks written to the worker log
MEMORY_HEADROOM = 3 << 30  # address space a worker may add to what its imports took

ATTR_NAMES = [
    "num_samples",
    "total",
    "env_args",
    "model_file",
    "ep_meta",
    "env",
    "env_info",
    "repository_version",
]
VALUE_KINDS = [
    "int",
    "negative",
    "huge_int",
    "float",
    "nan",
    "text",
    "bad_utf8",
    "array",
    "empty_array",
    "bool",
    "json_list",
    "json_deep",
    "not_json",
    "json_no_kwargs",
    "json_type_text",
    "pickle",
    "eval_bait",
    "path_like",
    "long_text",
    "compound",
]
DTYPE_KINDS = ["f2", "i1", "u8", "c8", "bool", "S4", "vlen_str", "compound", "nan_inf"]
SHAPE_KINDS = ["same", "scalar", "one_d", "extra_dim", "zero_len", "longer", "shorter"]
NAME_KINDS = [
    "..",
    "...",
    "~",
    "demo_-1",
    "demo_99999999999999999999999",
    "dëmo_1",
    "demo_1 ",
    "demo_1\n",
    "long",
    "..\\..\\etc",
    "demo_0",
]
LINK_TARGETS = ["forbidden", "missing", "self", "dev_zero"]
MASK_KINDS = ["paths", "absolute", "ints", "vlen", "huge", "nested", "unknown_demos"]


# =========================================================================== worker side
def _sha(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree(root: str) -> dict[str, str]:
    """{relative path: sha256} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = _sha(path)
    return out


def build_seeds(root: str) -> dict[str, str]:
    """Small valid inputs of every layout, and the 'forbidden' file links point to."""
    import h5py
    import hdf5plugin
    import numpy as np

    sys.path.insert(0, REPO_ROOT)
    from demoset.format.compression import parse_compression

    from tests.helpers import write_dataset

    seeds = os.path.join(root, "seeds")
    forbidden = os.path.join(root, "forbidden")
    for folder in (seeds, forbidden, os.path.join(root, "minari_home")):
        shutil.rmtree(folder, ignore_errors=True)  # a restarted worker builds them anew
        os.makedirs(folder)
    with h5py.File(os.path.join(forbidden, "secret.h5"), "w") as f:
        f["x"] = np.arange(700, dtype=np.float64).reshape(100, 7)
        f.create_group("g")["y"] = np.ones((5, 3))
    rng = np.random.default_rng(0)

    robomimic = os.path.join(seeds, "robomimic", "data.hdf5")
    os.makedirs(os.path.dirname(robomimic))
    write_dataset(
        robomimic,
        n_demos=3,
        min_len=4,
        max_len=9,
        cameras=("agentview",),
        image_size=8,
        action_dict=True,
        image_compression="gzip",
        filter_keys={"train": ["demo_0", "demo_1"], "valid": ["demo_2"]},
    )
    with h5py.File(robomimic, "a") as f:
        f["data/demo_0"].attrs["ep_meta"] = json.dumps({"lang": "lift"})

    d4rl = os.path.join(seeds, "d4rl", "d4rl.hdf5")
    os.makedirs(os.path.dirname(d4rl))
    n = 60
    with h5py.File(d4rl, "w") as f:
        f["observations"] = rng.standard_normal((n, 5)).astype(np.float32)
        f["next_observations"] = rng.standard_normal((n, 5)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        f["rewards"] = rng.random(n).astype(np.float32)
        f["terminals"] = np.arange(n) % 20 == 19
        f["timeouts"] = np.zeros(n, dtype=bool)
        f["infos/qpos"] = rng.standard_normal((n, 3))
        f["metadata/algorithm"] = "SAC"
        f.attrs["env_name"] = "hopper-medium-v2"

    raw = os.path.join(seeds, "raw", "raw.hdf5")
    os.makedirs(os.path.dirname(raw))
    with h5py.File(raw, "w") as f:
        data = f.create_group("data")
        data.attrs["env"] = "Lift"
        data.attrs["env_info"] = json.dumps({"robots": ["Panda"], "has_renderer": False})
        data.attrs["repository_version"] = "1.5.2"
        for k in range(1, 4):
            grp = data.create_group(f"demo_{k}")
            grp["states"] = rng.standard_normal((6 + k, 10))
            grp["actions"] = rng.uniform(-1, 1, (6 + k, 7))
            grp.attrs["model_file"] = "<mujoco model='raw'/>"

    roboturk = os.path.join(seeds, "roboturk", "bins-Can")
    os.makedirs(os.path.join(roboturk, "models"))
    with h5py.File(os.path.join(roboturk, "demo.hdf5"), "w") as f:
        data = f.create_group("data")
        data.attrs["env"] = "SawyerPickPlaceCan"
        for k in range(1, 4):
            grp = data.create_group(f"demo_{k}")
            m = 5 + k
            grp["states"] = rng.standard_normal((m, 12))
            grp["joint_velocities"] = rng.uniform(-1, 1, (m, 7))
            grp["gripper_actuations"] = rng.uniform(-1, 1, (m, 1))
            grp.attrs["model_file"] = f"model_{k}.xml"
            with open(os.path.join(roboturk, "models", f"model_{k}.xml"), "w") as mf:
                mf.write(f"<mujoco model='can_{k}'/>")

    compressed = os.path.join(seeds, "compressed", "data.hdf5")
    os.makedirs(os.path.dirname(compressed))
    write_dataset(
        compressed,
        n_demos=2,
        min_len=6,
        max_len=9,
        cameras=("agentview",),
        image_size=8,
        image_compression="zstd:9:4",
        filter_keys={"train": ["demo_0"]},
    )
    with h5py.File(compressed, "a") as f:  # a Blosc2 depth map beside the zstd images
        for demo in ("demo_0", "demo_1"):
            n = f["data"][demo]["actions"].shape[0]
            f["data"][demo].create_dataset(
                "obs/agentview_depth",
                data=rng.random((n, 8, 8, 1)).astype(np.float32),
                chunks=(4, 8, 8, 1),
                **hdf5plugin.Blosc2(cname="zstd", clevel=5, filters=hdf5plugin.Blosc2.SHUFFLE),
            )
            frames = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)  # and lz4hc images
            f["data"][demo].create_dataset(
                "obs/robot0_eye_in_hand_image",
                data=frames,
                **parse_compression("lz4hc:9:4").dataset_kwargs((8, 8, 3), np.uint8, n),
            )

    from demoset.convert.minari import export_minari

    os.environ["MINARI_DATASETS_PATH"] = os.path.join(root, "minari_home")
    plain = os.path.join(seeds, "plain.hdf5")
    write_dataset(plain, n_demos=2, min_len=4, max_len=6)
    export_minari(plain, "fuzz/seed-v0")
    minari = os.path.join(seeds, "minari")
    shutil.copytree(os.path.join(root, "minari_home", "fuzz", "seed-v0"), minari)
    return {
        "robomimic": robomimic,
        "d4rl": d4rl,
        "raw": raw,
        "roboturk": roboturk,
        "minari": minari,
        "compressed": compressed,
        "forbidden": forbidden,
    }


def main_file(fmt: str, copy: str) -> str:
    """The HDF5 file of a copied seed that mutations apply to."""
    if fmt == "roboturk":
        return os.path.join(copy, "demo.hdf5")
    if fmt == "minari":
        return os.path.join(copy, "data", "main_data.hdf5")
    return copy


def _value(kind: str, path: str):
    import numpy as np

    big = "[" * 5000 + "]" * 5000
    return {
        "int": 7,
        "negative": -3,
        "huge_int": 2**62,
        "float": 2.5,
        "nan": float("nan"),
        "text": "seven",
        "bad_utf8": np.bytes_(b"\xff\xfebad"),
        "array": np.arange(3),
        "empty_array": np.zeros(0),
        "bool": True,
        "json_list": "[1, 2, 3]",
        "json_deep": big,
        "not_json": "{env_name: Lift,",
        "json_no_kwargs": json.dumps({"env_name": "Lift", "type": 1}),
        "json_type_text": json.dumps({"env_name": "Lift", "type": "1", "env_kwargs": []}),
        "pickle": np.void(
            b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system"
            b"\x94\x93\x94\x8c\x05touch PWNED\x94\x85\x94R\x94."
        ),
        "eval_bait": "__import__('os').system('touch PWNED')",
        "path_like": "../../../../forbidden/secret.h5",
        "long_text": "x" * 200_000,
        "compound": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    }[kind]


def _new_dataset(group, name: str, old, dtype_kind: str, shape_kind: str) -> None:
    import h5py
    import numpy as np

    shape = tuple(old.shape) if old is not None and old.shape is not None else (5, 3)
    n = shape[0] if shape else 5
    rest = shape[1:] if len(shape) > 1 else ()
    new_shape = {
        "same": shape,
        "scalar": (),
        "one_d": (n,),
        "extra_dim": (*shape, 2) if shape else (2,),
        "zero_len": (0, *rest),
        "longer": (n + 3, *rest),
        "shorter": (max(n - 2, 1), *rest),
    }[shape_kind]
    count = int(np.prod(new_shape, dtype=np.int64)) if new_shape else 1
    if count > 10_000_000:
        new_shape, count = (5, 3), 15
    rng = np.random.default_rng(count)
    if dtype_kind == "vlen_str":
        data = np.array(["a" * (i % 4) for i in range(count)], dtype=object).reshape(new_shape)
        group.create_dataset(name, data=data, dtype=h5py.string_dtype())
        return
    if dtype_kind == "compound":
        data = np.zeros(new_shape, dtype=[("a", "i4"), ("b", "f8")])
    elif dtype_kind == "S4":
        data = np.full(new_shape, b"ab", dtype="S4")
    elif dtype_kind == "nan_inf":
        data = rng.standard_normal(new_shape)
        data.reshape(-1)[:: max(count // 3, 1)] = np.nan
        data.reshape(-1)[1::5] = np.inf
    else:
        data = rng.integers(0, 2, new_shape).astype(dtype_kind)
    group.create_dataset(name, data=data)


def apply_ops(path: str, ops: list, forbidden: str) -> None:
    """Damage `path` as the ops say. An op that cannot apply (e.g. to the root) is skipped."""
    import h5py
    import numpy as np

    for op in ops:
        kind = op[0]
        if kind == "truncate":
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.truncate(int(size * op[1]))
            continue
        if kind == "heap":  # the global heap damage that makes HDF5 2.0 loop forever
            sys.path.insert(0, REPO_ROOT)
            from tests.format.test_isolation import damage_global_heap

            damage_global_heap(path, op[1])
            continue
        if kind == "flip":
            rnd = random.Random(op[1])
            size = os.path.getsize(path)
            if size == 0:
                continue
            with open(path, "r+b") as f:
                for _ in range(op[2]):
                    pos = rnd.randrange(size)
                    f.seek(pos)
                    byte = f.read(1)
                    f.seek(pos)
                    f.write(bytes([byte[0] ^ (1 << rnd.randrange(8))]))
            continue
        try:
            f = h5py.File(path, "r+")
        except Exception:  # noqa: BLE001 - an earlier byte op may have ruined the file
            continue
        try:
            names: list[str] = []
            f.visit(names.append)
            objs = ["/"] + sorted("/" + n for n in names)
            target = objs[op[1] % len(objs)] if len(op) > 1 and isinstance(op[1], int) else "/"
            parent_path, _, leaf = target.rpartition("/")
            parent = f[parent_path or "/"]
            obj = f[target] if target != "/" else f
            if kind == "attr":
                names_here = sorted(obj.attrs.keys()) + ATTR_NAMES
                attr = names_here[op[2] % len(names_here)]
                if attr in obj.attrs:
                    del obj.attrs[attr]
                obj.attrs[attr] = _value(op[3], path)
            elif kind == "dset" and leaf:
                old = obj if isinstance(obj, h5py.Dataset) else None
                del parent[leaf]
                _new_dataset(parent, leaf, old, op[2], op[3])
            elif kind == "huge" and leaf:
                del parent[leaf]
                parent.create_dataset(leaf, shape=(2**40, 7), dtype="f8", chunks=(1024, 7))
            elif kind == "num_samples":
                obj.attrs["num_samples"] = 10**15
            elif kind == "empty" and leaf:
                del parent[leaf]
                parent.create_dataset(leaf, data=h5py.Empty("f8"))
            elif kind == "extlink" and leaf:
                del parent[leaf]
                dest = {
                    "forbidden": os.path.join(forbidden, "secret.h5"),
                    "missing": os.path.join(forbidden, "missing.h5"),
                    "self": path,
                    "dev_zero": "/dev/zero",
                }[op[2]]
                parent[leaf] = h5py.ExternalLink(dest, "/x")
            elif kind == "softlink" and leaf:
                del parent[leaf]
                parent[leaf] = h5py.SoftLink(objs[op[2] % len(objs)])
            elif kind == "vds" and leaf:
                del parent[leaf]
                layout = h5py.VirtualLayout(shape=(100, 7), dtype="f8")
                layout[:] = h5py.VirtualSource(
                    os.path.join(forbidden, "secret.h5"), "x", shape=(100, 7)
                )
                parent.create_virtual_dataset(leaf, layout)
            elif kind == "rename" and leaf:
                new = NAME_KINDS[op[2] % len(NAME_KINDS)]
                new = "n" * 300 if new == "long" else new
                if new not in parent:
                    parent.move(leaf, new)
            elif kind == "delete" and leaf:
                del parent[leaf]
            elif kind == "swap" and leaf:
                was_group = isinstance(obj, h5py.Group)
                del parent[leaf]
                if was_group:
                    parent[leaf] = np.arange(6.0)
                else:
                    parent.create_group(leaf).attrs["num_samples"] = 3
            elif kind == "named_type" and leaf:
                del parent[leaf]
                parent[leaf] = np.dtype("f8")
            elif kind == "mask":
                mask = f.require_group("mask")
                if "train" in mask:
                    del mask["train"]
                entries = {
                    "paths": np.array([b"../../forbidden/secret.h5", b"demo_0/obs"], dtype="S"),
                    "absolute": np.array([b"/data/demo_0", b"/mask/train"], dtype="S"),
                    "ints": np.arange(3),
                    "vlen": np.array(["demo_0", "démo"], dtype=h5py.string_dtype()),
                    "huge": None,
                    "nested": np.array([[b"demo_0"], [b"demo_1"]], dtype="S"),
                    "unknown_demos": np.array([b"demo_7", b"demo_0", b"demo_0"], dtype="S"),
                }[MASK_KINDS[op[1] % len(MASK_KINDS)]]
                if entries is None:
                    mask.create_dataset("train", shape=(2**40,), dtype="S8", chunks=(4096,))
                else:
                    mask["train"] = entries
        except Exception:  # noqa: BLE001 - ops that HDF5 refuses are simply skipped
            pass
        finally:
            f.close()


class FuzzTimeout(BaseException):
    """Raised by the alarm inside a call that ran too long (BaseException: not swallowed)."""


class HDF5GaveUp(Exception):
    """An isolated CLI command ended with exit 2 because HDF5 hung or crashed in its child."""


def _hdf5_gave_up(text: str) -> bool:
    return "HDF5 stopped responding" in text or "HDF5 crashed" in text


def _call_target(name: str, fmt: str, copy: str, data: str, out_dir: str, forbidden: str):
    """Run one entry point; returns a short description of its result."""
    import contextlib
    import io

    import numpy as np

    if name == "walk":
        from demoset.format import open_dataset

        with open_dataset(data) as df:
            _ = (df.demos, df.total, df.filter_keys, df.data_attrs(), df.is_raw_robosuite)
            if "env_args" in df.h5["data"].attrs:
                _ = df.env_meta
            for key in df.filter_keys:
                df.filter_key_demos(key)
                df.demos_for(key)
            for demo in df.demos[:4]:
                df.num_samples(demo)
                df.demo_attrs(demo)
                df.obs_keys(demo), df.next_obs_keys(demo), df.action_dict_keys(demo)
                for key in df.array_keys(demo):
                    df.read(demo, key)
                    df.read(demo, key, 0, 2)
            df.lengths()
            return f"{len(df.demos)} demos"
    if name == "validate":
        from demoset.format import validate

        return f"{len(validate(data))} findings"
    if name == "preflight":
        from demoset.format import preflight

        return f"{len(preflight(data))} findings"
    if name in ("cli_info", "cli_validate", "cli_repair"):
        from demoset.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        args = {
            "cli_info": ["info", data, "--json"],
            "cli_validate": ["validate", data],
            "cli_repair": ["repair", data, "--out", os.path.join(out_dir, "out_cli_repair.hdf5")],
        }[name]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse
                code = exc.code
        text = err.getvalue()
        if code not in (0, 1, 2) or "Traceback" in text:
            raise AssertionError(f"exit {code}: {text[-500:]}")
        if code == 2 and (text.count("\n") != 1 or not text.strip()):
            raise AssertionError(f"error output is not one line: {text[-500:]!r}")
        if code == 2 and _hdf5_gave_up(text):
            raise HDF5GaveUp(text.strip())
        return f"exit {code}"
    if name == "sequence":
        from demoset.format import open_dataset
        from demoset.loader import SequenceDataset

        with open_dataset(data) as df:
            obs_keys = list(df.obs_keys())[:3]
        mode = ["all", "low_dim", None][len(obs_keys) % 3]
        ds = SequenceDataset(
            data,
            obs_keys=obs_keys,
            dataset_keys=["actions", "rewards"],
            frame_stack=2,
            seq_length=2,
            cache_mode=mode,
            swmr=False,
            stats_cache=False,
            goal_mode="last",
        )
        try:
            for i in sorted({0, len(ds) // 2, len(ds) - 1}):
                if 0 <= i < len(ds):
                    ds[i]
            ds.get_batch(np.arange(min(len(ds), 4)))
        finally:
            ds.close()
        return f"{len(ds)} samples"
    out = os.path.join(out_dir, f"out_{name}.hdf5")
    if name == "repair":
        from demoset.repair import repair

        report = repair(data, out)
        return f"kept {len(report.kept)}"
    if name == "compress":
        from demoset.compress import compress_file

        report = compress_file(data, out, "none", verify=True)
        return f"{report.frames} frames"
    if name == "momart":
        from demoset.convert.momart import convert_momart

        convert_momart(data, out, require_momart_type=False)
        return "converted"
    if name == "d4rl":
        from demoset.convert.d4rl import convert_d4rl

        convert_d4rl(data, out)
        return "converted"
    if name == "raw":
        from demoset.convert.robosuite_raw import convert_robosuite_raw

        convert_robosuite_raw(data, out)
        return "converted"
    if name == "roboturk":
        from demoset.convert.roboturk_pilot import convert_roboturk_pilot

        convert_roboturk_pilot(copy, out, fastest_n=2)
        return "converted"
    if name == "minari":
        from demoset.convert.minari import convert_minari

        convert_minari(copy, out)
        return "converted"
    raise ValueError(name)


def run_case(case: dict, root: str, seeds: dict[str, str]) -> dict:
    """Build the damaged input of one case and run every entry point of its layout on it."""
    import faulthandler
    import signal
    import traceback

    from demoset.errors import DemosetError, UnsafeFileError

    fmt = case["format"]
    work = os.path.join(root, "cases", str(case["id"]))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    seed = seeds[fmt]
    copy = os.path.join(work, os.path.basename(seed))
    if os.path.isdir(seed):
        shutil.copytree(seed, copy)
    else:
        shutil.copyfile(seed, copy)
    data = main_file(fmt, copy)
    apply_ops(data, case["ops"], seeds["forbidden"])
    inputs = _tree(work)
    forbidden_before = _tree(seeds["forbidden"])
    outcomes: dict[str, str] = {}

    def on_alarm(signum, frame):
        raise FuzzTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    # if C code never returns (the alarm cannot interrupt it), leave a stack for the parent
    faulthandler.dump_traceback_later(STACK_DUMP_SECONDS)
    refused = False  # the isolated pre-flight said HDF5 hangs or crashes on the file
    for name in TARGETS[fmt]:
        if refused and name not in ISOLATED:
            outcomes[name] = "skipped: the pre-flight refused the file"
            continue
        signal.alarm(ISOLATED_CALL_SECONDS if name in ISOLATED else CALL_SECONDS)
        try:
            result = _call_target(name, fmt, copy, data, work, seeds["forbidden"])
            outcomes[name] = f"ok: {result}"
        except DemosetError as exc:
            text = str(exc)
            if not text.strip() or "\n" in text:
                outcomes[name] = f"FAIL: unclear {type(exc).__name__} message {text[:300]!r}"
            elif isinstance(exc, UnsafeFileError) and _hdf5_gave_up(text):
                outcomes[name] = f"stalled: {text[-200:]}"
            else:
                outcomes[name] = f"error: {type(exc).__name__}"
            refused = refused or (name == "preflight" and isinstance(exc, UnsafeFileError))
        except HDF5GaveUp as exc:
            outcomes[name] = f"stalled: exit 2, {str(exc)[-200:]}"
        except FuzzTimeout:
            outcomes[name] = "FAIL: no result before the alarm (hang)"
        except MemoryError:
            outcomes[name] = "FAIL: MemoryError (unbounded memory)"
        except BaseException as exc:  # noqa: BLE001 - every other exception is the finding
            tb = traceback.format_exc(limit=-4)
            outcomes[name] = f"FAIL: {type(exc).__name__}: {str(exc)[:300]} | {tb[-1200:]}"
        finally:
            signal.alarm(0)
    faulthandler.cancel_dump_traceback_later()
    after = _tree(work)
    for rel, checksum in after.items():
        if rel in inputs:
            if inputs[rel] != checksum:
                outcomes[f"input:{rel}"] = "FAIL: the input was modified"
        elif not (rel.startswith("out_") and rel.endswith(".hdf5")):
            outcomes[f"stray:{rel}"] = "FAIL: a file was written outside the output path"
    if os.path.exists(os.path.join(work, "PWNED")) or os.path.exists("PWNED"):
        outcomes["pwned"] = "FAIL: content of the file was executed"
    if _tree(seeds["forbidden"]) != forbidden_before:
        outcomes["forbidden"] = "FAIL: a file a link points to was changed"
    shutil.rmtree(work, ignore_errors=True)
    return {"id": case["id"], "format": fmt, "outcomes": outcomes}


def worker_main(root: str) -> None:
    """Serve cases from stdin (one JSON per line); answer each with one '@@' line."""
    import resource

    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.chdir(root)
    seeds = build_seeds(root)
    # import everything the entry points use before limiting the address space
    import demoset.cli.main  # noqa: F401
    import demoset.convert.d4rl  # noqa: F401
    import demoset.convert.minari  # noqa: F401
    import demoset.convert.momart  # noqa: F401
    import demoset.convert.robosuite_raw  # noqa: F401
    import demoset.convert.roboturk_pilot  # noqa: F401
    import demoset.loader  # noqa: F401
    import demoset.repair  # noqa: F401
    import demoset.summary  # noqa: F401

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = vm + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print("@@ready", flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        result = run_case(case, root, seeds)
        print("@@" + json.dumps(result), flush=True)


# =========================================================================== parent side
class Worker:
    """A fuzz worker process; restarted after it dies or hangs."""

    def __init__(self, root: str):
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def _start(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        env = dict(
            os.environ,
            TMPDIR=os.path.join(self.root, "tmp"),
            PYTHONFAULTHANDLER="1",
            DEMOSET_STALL_SECONDS=str(STALL_SECONDS),
        )
        os.makedirs(env["TMPDIR"], exist_ok=True)
        self.log_path = os.path.join(self.root, f"worker-{self.starts}.log")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", self.root],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=self.root,
            env=env,
        )
        log.close()
        self.starts += 1
        line = self._readline(300)
        if line != "@@ready":
            raise RuntimeError(f"fuzz worker did not start: {line!r}; see {self.root}")

    def _readline(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    return ""
                if line.startswith("@@"):
                    return line.strip()

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, case: dict) -> dict:
        if self.proc is None:
            self._start()
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        line = self._readline(CASE_SECONDS)
        if line:
            return {**json.loads(line[2:]), "ops": case["ops"]}
        if line is None:
            self._kill()
            verdict = hang_verdict(self.log_path)
        else:
            code = self.proc.wait()
            self.proc = None
            verdict = f"FAIL: the interpreter died (exit {code}; negative = signal)"
        return {
            "id": case["id"],
            "format": case["format"],
            "ops": case["ops"],
            "outcomes": {"worker": verdict},
        }

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill()
            self.proc = None


def hang_verdict(log_path: str) -> str:
    """Describe a case that never answered, from the stack the worker dumped while stuck.

    Every hang is a failure: isolated entry points must end after the stall limit, and
    in-process ones run only on files the isolated pre-flight walked to the end. The
    innermost frame (e.g. inside an h5py call: HDF5's C code, which no alarm can
    interrupt) is kept in the verdict to show where it hung.
    """
    try:
        with open(log_path, errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    dump = text.rsplit("Timeout (", 1)[-1] if "Timeout (" in text else ""
    # one block per thread, innermost frame first; the worker's main thread runs run_case
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", dump)
    main = next((b for b in blocks if "in run_case" in b), "")
    frames = [ln.strip() for ln in main.splitlines() if ln.strip().startswith("File ")]
    first = frames[0] if frames else ""
    inside = " inside HDF5 (an h5py call never returned)" if "/h5py/" in first else ""
    return f"FAIL: the case took more than {CASE_SECONDS} s (hang){inside} {first}"


def failures_of(result: dict) -> list[str]:
    return [f"{k}: {v}" for k, v in result["outcomes"].items() if v.startswith("FAIL")]


def byte_cases(count: int, seed: int, first_id: int) -> list[dict]:
    """Seeded byte flips and truncations, sometimes after a structural change."""
    rnd = random.Random(seed)
    cases = []
    for k in range(count):
        fmt = rnd.choice(FORMATS[:1] * 4 + FORMATS)
        ops: list = []
        if rnd.random() < 0.2:
            ops.append(["attr", rnd.randrange(10**6), rnd.randrange(100), rnd.choice(VALUE_KINDS)])
        if rnd.random() < 0.25:
            ops.append(["truncate", rnd.uniform(0.05, 0.999)])
        else:
            ops.append(["flip", rnd.randrange(2**31), rnd.choice([1, 1, 2, 4, 16, 64])])
        cases.append({"id": first_id + k, "format": fmt, "ops": ops})
    return cases


def heap_cases(first_id: int) -> list[dict]:
    """One case per global heap of the robomimic seed (env_args, model_file, ep_meta) and
    the first heap of every other layout: HDF5 2.0 loops forever reading from it."""
    cases = [{"id": first_id + k, "format": "robomimic", "ops": [["heap", k]]} for k in range(3)]
    for fmt in FORMATS[1:]:
        cases.append({"id": first_id + len(cases), "format": fmt, "ops": [["heap", 0]]})
    return cases


def run_cases(cases: list[dict], root: str, workers: int = 1) -> list[dict]:
    """Run cases on `workers` worker processes (round robin); returns their results."""
    pool = [Worker(os.path.join(root, f"w{i}")) for i in range(workers)]
    results: list[dict] = []
    try:
        if workers == 1:
            for case in cases:
                results.append(pool[0].run(case))
        else:
            from concurrent.futures import ThreadPoolExecutor

            chunks = [cases[i::workers] for i in range(workers)]

            def drain(i: int) -> list[dict]:
                return [pool[i].run(case) for case in chunks[i]]

            with ThreadPoolExecutor(workers) as ex:
                for part in ex.map(drain, range(workers)):
                    results.extend(part)
    finally:
        for w in pool:
            w.close()
    return results


def summary(results: list[dict]) -> dict:
    """Counts for the report: cases, calls, results by kind, failures."""
    calls = Counter()
    for res in results:
        for target, verdict in res["outcomes"].items():
            calls[(target.split(":")[0], verdict.split(":")[0])] += 1
    return {
        "cases": len(results),
        "calls": sum(
            v for (t, k), v in calls.items() if t in sum(TARGETS.values(), []) and k != "skipped"
        ),
        "by_target": {f"{t} {k}": v for (t, k), v in sorted(calls.items())},
        "failures": [
            f"case {r['id']} ({r['format']}, ops {r.get('ops')}): {f}"
            for r in results
            for f in failures_of(r)
        ],
    }


def report(name: str, results: list[dict]) -> dict:
    info = summary(results)
    path = os.environ.get("DEMOSET_FUZZ_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"run": name, **info}) + "\n")
    print(f"\n{name}: {info['cases']} cases, {info['calls']} calls")
    for key, value in info["by_target"].items():
        print(f"  {key}: {value}")
    return info


# =========================================================================== the tests
def case_strategy(first_id: list[int]):
    obj = st.integers(0, 10**6)
    ops = st.one_of(
        st.tuples(st.just("attr"), obj, st.integers(0, 100), st.sampled_from(VALUE_KINDS)),
        st.tuples(st.just("dset"), obj, st.sampled_from(DTYPE_KINDS), st.sampled_from(SHAPE_KINDS)),
        st.tuples(st.just("huge"), obj),
        st.tuples(st.just("num_samples"), obj),
        st.tuples(st.just("empty"), obj),
        st.tuples(st.just("extlink"), obj, st.sampled_from(LINK_TARGETS)),
        st.tuples(st.just("softlink"), obj, obj),
        st.tuples(st.just("vds"), obj),
        st.tuples(st.just("rename"), obj, st.integers(0, 100)),
        st.tuples(st.just("delete"), obj),
        st.tuples(st.just("swap"), obj),
        st.tuples(st.just("named_type"), obj),
        st.tuples(st.just("mask"), st.integers(0, 100)),
        st.tuples(st.just("truncate"), st.floats(0.3, 0.999)),
    )

    def build(fmt, op_list):
        first_id[0] += 1
        return {"id": first_id[0], "format": fmt, "ops": [list(o) for o in op_list]}

    formats = st.sampled_from(("robomimic",) * 4 + FORMATS)
    return st.builds(build, formats, st.lists(ops, min_size=1, max_size=4))


def _structural(tmp_path_factory, count: int, name: str) -> None:
    root = str(tmp_path_factory.mktemp("fuzz"))
    worker = Worker(os.path.join(root, "w0"))
    results: list[dict] = []
    ids = [0]

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=name == "short",
        suppress_health_check=list(HealthCheck),
    )
    @given(case=case_strategy(ids))
    def check(case):
        result = worker.run(case)
        results.append(result)
        assert failures_of(result) == [], (case, failures_of(result))

    try:
        check()
    finally:
        worker.close()
        report(f"structural ({name})", results)


def _bytes(tmp_path_factory, count: int, name: str, workers: int) -> None:
    root = str(tmp_path_factory.mktemp("fuzz_bytes"))
    cases = byte_cases(count, seed=12345, first_id=10**6)
    if name == "long":
        cases += heap_cases(first_id=2 * 10**6)
    results = run_cases(cases, root, workers)
    info = report(f"byte mutations ({name})", results)
    assert info["failures"] == [], "\n".join(info["failures"][:20])


SHORT_CASES = 75


@pytest.mark.skipif(given is None, reason="hypothesis is not installed")
def test_fuzz_short_structural(tmp_path_factory):
    _structural(tmp_path_factory, SHORT_CASES, "short")


def test_fuzz_short_bytes(tmp_path_factory):
    _bytes(tmp_path_factory, SHORT_CASES, "short", workers=1)


def _long_count() -> int:
    return int(os.environ.get("DEMOSET_FUZZ_CASES", "5000"))


@pytest.mark.slow
@pytest.mark.skipif(given is None, reason="hypothesis is not installed")
def test_fuzz_long_structural(tmp_path_factory):
    _structural(tmp_path_factory, _long_count() // 2, "long")


@pytest.mark.slow
def test_fuzz_long_bytes(tmp_path_factory):
    _bytes(tmp_path_factory, _long_count() - _long_count() // 2, "long", workers=2)


# =========================================================================== content is data
class _Payload:
    """Unpickling this runs `touch PWNED` (what a malicious file would carry)."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


EVAL_BAIT = "__import__('os').system('touch PWNED')"
XXE_MODEL = (
    '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e SYSTEM "file:///etc/hostname">]>'
    "<mujoco model='&e;'/>"
)


def test_untrusted_attributes_are_text_never_code(tmp_path, monkeypatch):
    """env_args, ep_meta and model_file holding pickles and eval bait are read as text."""
    import pickle

    import h5py
    import numpy as np

    from demoset.cli.main import main
    from demoset.errors import LayoutError
    from demoset.format import open_dataset, validate
    from demoset.loader import SequenceDataset
    from demoset.repair import repair

    sys.path.insert(0, REPO_ROOT)
    from tests.helpers import write_dataset

    monkeypatch.chdir(tmp_path)
    path = write_dataset(tmp_path / "hostile.hdf5", n_demos=2)
    blob = pickle.dumps(_Payload())
    with h5py.File(path, "a") as f:
        f["data"].attrs["env_args"] = np.void(blob)
        f["data/demo_0"].attrs["ep_meta"] = EVAL_BAIT
        f["data/demo_0"].attrs["model_file"] = XXE_MODEL
        f["data/demo_1"].attrs["ep_meta"] = np.void(blob)
        f["data/demo_1"].attrs["model_file"] = blob.replace(b"\0", b"").decode("latin-1")
    with open_dataset(path) as df:
        with pytest.raises(LayoutError, match="env_args is not JSON"):
            _ = df.env_meta
        attrs = df.demo_attrs("demo_0")
        assert attrs["ep_meta"] == EVAL_BAIT and attrs["model_file"] == XXE_MODEL
        assert df.demo_attrs("demo_1")["model_file"] == blob.replace(b"\0", b"").decode("latin-1")
    with h5py.File(path, "a") as f:
        f["data"].attrs["env_args"] = EVAL_BAIT
    codes = {f.code for f in validate(path)}
    assert "bad_env_args" in codes
    assert main(["info", str(path), "--json"]) == 0
    ds = SequenceDataset(path, obs_keys=["object"], swmr=False, stats_cache=False)
    assert len(ds) > 0 and ds[0]["actions"].shape[-1] == 7
    ds.close()
    report = repair(path, tmp_path / "copy.hdf5")
    assert report.kept == ["demo_0", "demo_1"]
    with h5py.File(tmp_path / "copy.hdf5", "r") as f:
        assert f["data/demo_0"].attrs["model_file"] == XXE_MODEL  # copied as it was
    assert not os.path.exists(tmp_path / "PWNED")


def test_checkpoints_are_loaded_without_running_code(tmp_path, monkeypatch):
    """A checkpoint carrying a pickled payload is refused (torch.load weights_only=True)."""
    import pickle

    from demoset.errors import DemosetError
    from demoset.train.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "model.pth"
    with open(evil, "wb") as f:
        pickle.dump({"format": "demoset", "weights": _Payload()}, f, protocol=2)
    with pytest.raises(DemosetError, match="not a readable checkpoint"):
        load_checkpoint(evil)
    assert not os.path.exists(tmp_path / "PWNED")


# =========================================================================== memory
def _huge_dataset_file(tmp_path) -> str:
    """A valid dataset whose demo_1 declares 8 TB of actions the file does not store."""
    import h5py

    sys.path.insert(0, REPO_ROOT)
    from tests.helpers import write_dataset

    path = write_dataset(tmp_path / "huge.hdf5", n_demos=2)
    with h5py.File(path, "a") as f:
        grp = f["data/demo_1"]
        del grp["actions"]
        grp.create_dataset("actions", shape=(2**40, 7), dtype="f8", chunks=(4096, 7))
    return str(path)


def test_reads_that_would_not_fit_are_refused_before_allocating(tmp_path):
    from demoset.errors import InsufficientMemoryError, LayoutError
    from demoset.format import open_dataset, validate
    from demoset.memory import ensure_fits

    path = _huge_dataset_file(tmp_path)
    with open_dataset(path) as df:
        with pytest.raises(LayoutError, match="declares 56.0 TB but stores 0 B"):
            df.read("demo_1", "actions")
        assert df.read("demo_0", "actions").shape[1] == 7  # the rest of the file reads
    findings = validate(path)
    assert any(f.h5path.startswith("/data/demo_1") for f in findings)
    # a genuine array larger than memory: refused by size before numpy allocates
    with pytest.raises(InsufficientMemoryError, match="needs 8.0 TB"):
        ensure_fits(8 << 40, "reading /data/demo_1/actions", path, available=16 << 30)
    # the whole command line on that file, with the address space capped at +1 GB: a
    # clear error, not a MemoryError or the OOM killer
    code = (
        "import contextlib, io, json, resource, sys\n"
        "from demoset.cli.main import main\n"
        "import demoset.summary, demoset.format.validate, demoset.repair\n"
        "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30),) * 2)\n"
        "codes = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        codes.append(main(args))\n"
        "print(codes)\n"
    )
    runs = [["info", path], ["validate", path], ["repair", path, "--out", str(tmp_path / "r.h5")]]
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(runs)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
    info, valid, repaired = json.loads(proc.stdout)
    assert info in (0, 2) and valid == 1 and repaired == 0, proc.stdout + proc.stderr


def test_loader_cache_that_would_not_fit_is_refused(tmp_path, monkeypatch):
    """cache_mode='all' on more image bytes than memory: InsufficientMemoryError up front."""
    import demoset.memory
    from demoset.errors import InsufficientMemoryError
    from demoset.loader import SequenceDataset

    sys.path.insert(0, REPO_ROOT)
    from tests.helpers import write_dataset

    path = write_dataset(tmp_path / "imgs.hdf5", n_demos=3, cameras=("agentview",), image_size=32)
    # pretend this machine has 64 KB free (the real psutil figure is what ensure_fits reads)
    monkeypatch.setattr(demoset.memory, "available_bytes", lambda: 64 * 1024)
    with pytest.raises(InsufficientMemoryError, match="cache_mode='all'"):
        SequenceDataset(path, obs_keys=["agentview_image"], cache_mode="all", swmr=False)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    worker_main(sys.argv[2])
