"""Benchmark: demoset.SequenceDataset against robomimic 0.3.0's SequenceDataset.

Builds two files with demoset's writer (nothing is downloaded):

- low-dim: 200 demos x 150 steps shaped like robomimic's Lift low-dim (robot0_eef_pos 3,
  robot0_eef_quat 4, robot0_gripper_qpos 2, object 10, float64; actions 7), with next_obs;
- image: the same low-dim keys plus two 84x84 cameras (agentview_image,
  robot0_eye_in_hand_image), uncompressed (contiguous), 20 demos x 150 steps by default.

Every measurement runs in a fresh Python process (so resident memory is not blurred by
the allocator's reuse), after building the same loader once on a 2-demo file (so one-time
library costs are not charged to the dataset) and one untimed pass that brings the file
into the page cache.
Both loaders get the same window configuration (seq_length 10, frame_stack 1, padding on,
load_next_obs True as robomimic's default) and are read through a torch DataLoader with no
workers and a shuffled sampler: robomimic with torch's default collate (as robomimic's
train script does), demoset with `collate_fn=demoset.loader.collate`. Reported:

- samples/s over a fixed number of batches (robomimic: fewer batches, it is slower);
- start-up: the constructor's wall time (robomimic's "all" includes its get_item cache);
- memory: growth of the process's resident set (psutil RSS, after gc and malloc_trim)
  across the constructor;
- workers: private memory (USS: pages no other process shares) of 2 DataLoader workers
  over a dataset cached in shared memory, against the resident set of one process that
  read the same batches alone. It includes the batches each worker prepares ahead
  (prefetch_factor 2).

Each case runs `--repeat` times (default 3) with the two loaders taking turns, and the
best run of each counts, so that load from other jobs on a shared machine does not decide
the ratio.

Image cases run demoset a second time with `copy_threads=1` (what the copy threads add),
and the copy ceiling is measured with 1 and 2 threads.

Run: `.venv/bin/python benchmarks/loader.py` (about 8-10 minutes; `--quick` for less,
`--only images` for the cases whose name has that text).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

LOW_DIM = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10}
CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")
LIFT_ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}}
SEQ_LENGTH = 10


# ---------------------------------------------------------------------------- files
def build_file(
    path: str, n_demos: int, steps: int, cameras: tuple[str, ...], image_size: int = 84
) -> None:
    from demoset.format import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(path, env_meta=LIFT_ENV, overwrite=True) as w:
        for _ in range(n_demos):
            obs = {k: rng.standard_normal((steps, d)) for k, d in LOW_DIM.items()}
            for cam in cameras:
                obs[cam] = rng.integers(0, 256, (steps, image_size, image_size, 3), dtype=np.uint8)
            w.add_demo(
                actions=rng.uniform(-1, 1, (steps, 7)),
                obs=obs,
                rewards=np.zeros(steps),
                states=rng.standard_normal((steps, 32)),
                derive_next_obs=True,
            )


def selected_bytes(path: str, obs_keys: list[str], images_only: bool = False) -> int:
    """File bytes of the arrays a loader selects: obs and next_obs of obs_keys, plus actions."""
    import h5py

    total = 0
    with h5py.File(path, "r") as f:
        for demo in f["data"]:
            g = f["data"][demo]
            for key in obs_keys:
                if images_only and key not in CAMERAS:
                    continue
                total += g["obs"][key].nbytes + g["next_obs"][key].nbytes
            if not images_only:
                total += g["actions"].nbytes
    return total


# ---------------------------------------------------------------------------- one measurement
def rss() -> int:
    """Resident set size after a garbage collection and a malloc_trim (for both loaders alike,
    so that neither is charged for heap pages the other's imports freed)."""
    import ctypes

    import psutil

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return psutil.Process().memory_info().rss


def make_dataset(which: str, path: str, obs_keys: list[str], cache_mode, copy_threads=None):
    common = dict(frame_stack=1, seq_length=SEQ_LENGTH, pad_frame_stack=True, pad_seq_length=True)
    if which == "robomimic":
        import robomimic.utils.obs_utils as ObsUtils
        from robomimic.utils.dataset import SequenceDataset

        ObsUtils.initialize_obs_utils_with_obs_specs(
            {
                "obs": {
                    "low_dim": [k for k in obs_keys if k not in CAMERAS],
                    "rgb": [k for k in obs_keys if k in CAMERAS],
                }
            }
        )
        return SequenceDataset(path, obs_keys, ["actions"], hdf5_cache_mode=cache_mode, **common)
    from demoset.loader import SequenceDataset

    return SequenceDataset(
        path,
        obs_keys,
        ["actions"],
        cache_mode=cache_mode,
        stats_cache=False,
        copy_threads=copy_threads,
        **common,
    )


def measure(spec: dict) -> dict:
    """Runs in a child process: construct, read batches, report figures."""
    import contextlib
    import io

    import torch

    which, path, obs_keys = spec["which"], spec["path"], spec["obs_keys"]
    # import both libraries' modules and wake HDF5 up before the baseline, so that the
    # figures are the dataset's own; then warm the page cache with one pass over the file
    import h5py
    import robomimic.utils.dataset  # noqa: F401
    import robomimic.utils.obs_utils  # noqa: F401

    import demoset.loader  # noqa: F401

    with h5py.File(path, "r") as f:
        f["data/demo_0/actions"][()]
    # one-time costs (library set-up, first allocations) are paid on a 2-demo file first
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warm = make_dataset(
            which, spec["warmup_path"], obs_keys, spec["cache_mode"], spec.get("copy_threads")
        )
        warm[0]
        del warm
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass
    base = rss()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ds = make_dataset(which, path, obs_keys, spec["cache_mode"], spec.get("copy_threads"))
    startup = time.perf_counter() - t0
    mem = rss() - base
    kwargs = {}
    if which == "demoset":
        from demoset.loader import collate

        kwargs["collate_fn"] = collate
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=spec["batch_size"],
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        num_workers=spec.get("workers", 0),
        persistent_workers=spec.get("workers", 0) > 0,
        **kwargs,
    )
    out = {"startup_s": startup, "rss_delta": mem, "len": len(ds)}
    it = iter(loader)
    next(it)  # first batch untimed (worker start-up, lazy file opens)
    n = 0
    t0 = time.perf_counter()
    for _ in range(spec["batches"]):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += len(batch["actions"])
    out["samples_per_s"] = n / (time.perf_counter() - t0)
    if which == "demoset":
        from demoset.loader.copying import auto_copy_threads

        out["copy_threads"] = ds.copy_threads or auto_copy_threads()
        out["cached_bytes"] = ds.cached_bytes
        ids = np.random.default_rng(0).integers(0, len(ds), (spec["batches"], spec["batch_size"]))
        t0 = time.perf_counter()
        for row in ids:
            ds.get_batch(row)
        out["get_batch_per_s"] = ids.size / (time.perf_counter() - t0)
    if spec.get("workers", 0) > 0:
        import psutil

        kids = psutil.Process().children(recursive=True)
        out["worker_uss"] = sum(k.memory_full_info().uss for k in kids)
        out["n_workers"] = len(kids)
    return out


def measure_single_process(spec: dict) -> dict:
    """RSS of one process that read the same batches without workers (the workers' yardstick)."""
    import psutil
    import torch

    from demoset.loader import SequenceDataset, collate

    torch.set_num_threads(1)
    ds = SequenceDataset(
        spec["path"],
        spec["obs_keys"],
        ["actions"],
        cache_mode=spec["cache_mode"],
        seq_length=SEQ_LENGTH,
        stats_cache=False,
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=spec["batch_size"], shuffle=True, collate_fn=collate
    )
    for i, _ in enumerate(loader):
        if i >= spec["batches"]:
            break
    info = psutil.Process().memory_full_info()
    return {"rss": info.rss, "uss": info.uss}


def measure_copy_ceiling(spec: dict) -> dict:
    """How fast this machine can move one image batch's bytes once, from RAM and from the
    page cache, with 1 and 2 threads: the bound on any loader that hands out batches in
    fresh memory.

    Gathers random 10-step windows of four 84x84x3 arrays (two cameras, obs and next_obs)
    into reused output arrays with numpy (RAM) and with os.preadv from the image file
    (page cache), at batch 16, like the image cases; with 2 threads each thread moves two
    of the four arrays.
    """
    from concurrent.futures import ThreadPoolExecutor

    path, bs, batches = spec["path"], spec["batch_size"], spec["batches"]
    frame = 84 * 84 * 3
    frames = os.path.getsize(path) // frame // 4
    rng = np.random.default_rng(0)
    caches = [rng.integers(0, 256, (frames, 84, 84, 3), dtype=np.uint8) for _ in range(4)]
    outs = [np.ones((bs * SEQ_LENGTH, 84, 84, 3), dtype=np.uint8) for _ in range(4)]
    windows = [[out[i * SEQ_LENGTH : (i + 1) * SEQ_LENGTH] for i in range(bs)] for out in outs]
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size

    def from_ram(k: int, starts: np.ndarray) -> None:
        flat = (starts[:, None] + np.arange(SEQ_LENGTH)).ravel()
        caches[k].take(flat, axis=0, out=outs[k], mode="clip")

    def from_file(k: int, starts: np.ndarray) -> None:
        for place, start in zip(windows[k], starts):
            os.preadv(fd, [place], int(start))

    out = {}
    for threads in (1, 2):
        with ThreadPoolExecutor(threads) as pool:
            for name, move, high in (
                ("ram", from_ram, frames - SEQ_LENGTH),
                ("file", from_file, size - SEQ_LENGTH * frame),
            ):
                t0 = time.perf_counter()
                for _ in range(batches):
                    starts = rng.integers(0, high, (4, bs))
                    list(pool.map(move, range(4), starts))
                out[f"{name}_{threads}"] = batches * bs / (time.perf_counter() - t0)
    os.close(fd)
    return out


def run_child(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- report
def fmt_mb(n: float) -> str:
    return f"{n / 2**20:8.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help="where to write the benchmark files (default: a temp dir)")
    parser.add_argument("--image-demos", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="fewer batches (noisier)")
    parser.add_argument("--only", default="", help="run only the cases whose name has this text")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each loader per case, taking turns; the best counts (default 3)",
    )
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        fn = (
            measure_copy_ceiling
            if spec.get("ceiling")
            else measure_single_process
            if spec.get("single")
            else measure
        )
        print(json.dumps(fn(spec)))
        return 0

    scale = 0.3 if args.quick else 1.0
    workdir = args.dir or tempfile.mkdtemp(prefix="demoset-bench-")
    low_path = os.path.join(workdir, "lowdim.hdf5")
    img_path = os.path.join(workdir, "image.hdf5")
    t0 = time.perf_counter()
    if not os.path.exists(low_path):
        build_file(low_path, 200, 150, ())
    if not os.path.exists(img_path):
        build_file(img_path, args.image_demos, 150, CAMERAS)
    warm_path = os.path.join(workdir, "warmup.hdf5")
    if not os.path.exists(warm_path):
        build_file(warm_path, 2, 20, CAMERAS)
    print(f"files built in {time.perf_counter() - t0:.1f} s in {workdir}")
    low_keys = list(LOW_DIM)
    img_keys = list(LOW_DIM) + list(CAMERAS)
    low_bytes = selected_bytes(low_path, low_keys)
    img_bytes = selected_bytes(img_path, img_keys, images_only=True)

    def b(n: int) -> int:
        return max(int(n * scale), 5)

    cases = [
        # name, path, keys, cache mode, batch size, robomimic batches, demoset batches
        ("low-dim, cache all", low_path, low_keys, "all", 100, b(300), b(3000)),
        ("images, cache low_dim", img_path, img_keys, "low_dim", 16, b(60), b(600)),
        ("images, cache None", img_path, img_keys, None, 16, b(40), b(600)),
        ("images, cache all", img_path, img_keys, "all", 16, b(300), b(600)),
    ]
    results = {}

    def better(old: dict | None, new: dict) -> dict:
        """Best of the repeats: the fastest run's figures, the shortest start-up."""
        if old is None:
            return new
        best = dict(new if new["samples_per_s"] > old["samples_per_s"] else old)
        best["startup_s"] = min(old["startup_s"], new["startup_s"])
        return best

    cases = [c for c in cases if args.only in c[0]]
    for name, path, keys, mode, bs, rm_batches, ds_batches in cases:
        loaders = [("robomimic", rm_batches, None), ("demoset", ds_batches, None)]
        if path == img_path:  # demoset with one copy thread too: what the threads add
            loaders.append(("demoset 1t", ds_batches, 1))
        # the loaders take turns, so a burst of load from other jobs hits them alike
        for _ in range(args.repeat):
            for label, batches, threads in loaders:
                spec = dict(
                    which=label.split()[0],
                    path=path,
                    warmup_path=warm_path,
                    obs_keys=keys,
                    cache_mode=mode,
                    batch_size=bs,
                    batches=batches,
                    copy_threads=threads,
                )
                r = run_child(spec)
                results[(name, label)] = better(results.get((name, label)), r)
                print(
                    f"  {name:24s} {label:10s} {r['samples_per_s']:12,.0f} samples/s  start-up {r['startup_s']:6.2f} s  RSS +{fmt_mb(r['rss_delta'])}",
                    flush=True,
                )
    if len(cases) < 4:  # a partial run (--only): the table of what ran, no verdicts
        for (name, label), r in results.items():
            print(f"{name:24s} {label:10s} {r['samples_per_s']:12,.0f} samples/s")
        return 0

    ceiling = run_child({"ceiling": True, "path": img_path, "batch_size": 16, "batches": b(300)})
    workers = {}
    for name, path, keys, bs in (
        ("low-dim", low_path, low_keys, 100),
        ("images", img_path, img_keys, 16),
    ):
        spec = dict(
            which="demoset",
            path=path,
            warmup_path=warm_path,
            obs_keys=keys,
            cache_mode="all",
            batch_size=bs,
            batches=b(150),
        )
        workers[name] = (run_child({**spec, "single": True}), run_child({**spec, "workers": 2}), bs)

    print()
    print(
        f"selected arrays: low-dim file {fmt_mb(low_bytes)} (obs + next_obs + actions); image file images {fmt_mb(img_bytes)} (obs + next_obs)"
    )
    header = f"{'case':24s} | {'robomimic/s':>12s} {'demoset/s':>12s} {'ratio':>7s} | {'1 thread/s':>10s} {'ratio':>6s} | {'rm start':>8s} {'ds start':>8s} | {'rm RSS':>11s} {'ds RSS':>11s} | {'ds get_batch/s':>14s}"
    print(header)
    print("-" * len(header))
    for name, *_ in cases:
        rm, ds = results[(name, "robomimic")], results[(name, "demoset")]
        one = results.get((name, "demoset 1t"))
        single = (
            f"{one['samples_per_s']:10,.0f} {one['samples_per_s'] / rm['samples_per_s']:5.1f}x"
            if one
            else f"{'-':>10s} {'':6s}"
        )
        print(
            f"{name:24s} | {rm['samples_per_s']:12,.0f} {ds['samples_per_s']:12,.0f} {ds['samples_per_s'] / rm['samples_per_s']:6.1f}x | {single} | "
            f"{rm['startup_s']:7.2f}s {ds['startup_s']:7.2f}s | {fmt_mb(rm['rss_delta'])} {fmt_mb(ds['rss_delta'])} | {ds['get_batch_per_s']:14,.0f}"
        )
    print(
        "demoset splits big copies over the CPUs it may use (here "
        f"{results[('images, cache all', 'demoset')]['copy_threads']}); '1 thread' is copy_threads=1."
    )
    print()

    def verdict(ok: bool) -> str:
        return "MET " if ok else "MISS"

    low_rm, low_ds = (
        results[("low-dim, cache all", "robomimic")],
        results[("low-dim, cache all", "demoset")],
    )
    file_rm = results[("images, cache low_dim", "robomimic")]
    lines = [
        (
            low_ds["samples_per_s"] >= 20 * low_rm["samples_per_s"],
            f"low-dim all: {low_ds['samples_per_s'] / low_rm['samples_per_s']:.1f}x robomimic samples/s through the DataLoader "
            f"(target >= 20x); demoset's batch fetch alone (get_batch) {low_ds['get_batch_per_s'] / low_rm['samples_per_s']:.1f}x",
        ),
        (
            low_ds["rss_delta"] <= 1.25 * low_bytes,
            f"low-dim all: memory {low_ds['rss_delta'] / low_bytes:.2f}x the selected arrays' bytes (target <= 1.25x)",
        ),
        (
            low_ds["startup_s"] <= low_rm["startup_s"],
            f"low-dim all: start-up {low_ds['startup_s']:.2f} s vs robomimic {low_rm['startup_s']:.2f} s (target: no slower)",
        ),
    ]
    for mode in ("low_dim", None):
        name = f"images, cache {mode}"
        rm, ds = results[(name, "robomimic")], results[(name, "demoset")]
        lines.append(
            (
                ds["samples_per_s"] >= 10 * rm["samples_per_s"],
                f"images {mode}: {ds['samples_per_s'] / rm['samples_per_s']:.1f}x robomimic {mode} (target >= 10x)",
            )
        )
    all_rm, all_ds = (
        results[("images, cache all", "robomimic")],
        results[("images, cache all", "demoset")],
    )
    lines += [
        (
            all_ds["rss_delta"] <= 1.1 * img_bytes,
            f"images all: memory {all_ds['rss_delta'] / img_bytes:.2f}x the image bytes (target <= 1.1x); robomimic all {all_rm['rss_delta'] / img_bytes:.2f}x",
        ),
        (
            all_ds["samples_per_s"] >= 20 * file_rm["samples_per_s"],
            f"images all: {all_ds['samples_per_s'] / file_rm['samples_per_s']:.1f}x robomimic reading images from the file (target >= 20x); {all_ds['samples_per_s'] / all_rm['samples_per_s']:.1f}x robomimic all",
        ),
    ]
    for name, (alone, with_workers, bs) in workers.items():
        added = with_workers["worker_uss"]
        lines.append(
            (
                added < 0.1 * alone["rss"],
                f"{name} cache all, batch {bs}: 2 DataLoader workers add {fmt_mb(added).strip()} of private memory (USS) to one "
                f"process of {fmt_mb(alone['rss']).strip()} RSS ({added / alone['rss']:.1%}; target < 10%)",
            )
        )
    for ok, text in lines:
        print(f"[{verdict(ok)}] {text}")
    batch_bytes = 16 * SEQ_LENGTH * len(CAMERAS) * 2 * 84 * 84 * 3
    file_ds = results[("images, cache low_dim", "demoset")]
    rm_file = file_rm["samples_per_s"]
    print(
        f"\ncopy ceiling: one image batch (16 x {SEQ_LENGTH} steps, {len(CAMERAS)} cameras, obs + next_obs) is "
        f"{fmt_mb(batch_bytes).strip()}. Moving those bytes once, with nothing else done, this machine reaches "
        f"from RAM {ceiling['ram_1']:,.0f} samples/s with 1 thread ({ceiling['ram_1'] / rm_file:.1f}x robomimic low_dim), "
        f"{ceiling['ram_2']:,.0f} with 2 ({ceiling['ram_2'] / rm_file:.1f}x); from the page cache {ceiling['file_1']:,.0f} "
        f"({ceiling['file_1'] / rm_file:.1f}x) and {ceiling['file_2']:,.0f} ({ceiling['file_2'] / rm_file:.1f}x). "
        f"demoset: images all {all_ds['samples_per_s'] / ceiling['ram_2']:.0%} of the 2-thread RAM ceiling, images low_dim "
        f"{file_ds['samples_per_s'] / ceiling['file_2']:.0%} of the 2-thread page-cache ceiling."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
