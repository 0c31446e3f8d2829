"""Observation extraction speed: frames/s with 1 and with 2 worker processes on the same demos.

    .venv/bin/python benchmarks/extract.py [DATASET] [--demos 6] [--cameras agentview robot0_eye_in_hand]
        [--workers 1 2] [--fresh]

DATASET defaults to the bundled examples/lift_raw.hdf5 (raw robosuite states). Each run
renders every stored state with the given cameras at 84x84 into a temporary file; the
outputs of all runs are compared byte for byte. Timings include starting the worker
processes and creating their simulators, as a user would see them. Frames per CPU-second
(this process plus its workers) are printed too: wall-clock speed-up needs idle cores,
and on a shared machine the CPU figure shows whether the work itself scales.

First the rendering floor is measured in this process: how long one observation (every
camera rendered once, plus the low-dim values) takes after a reset to a stored state. No
extraction can go faster per worker than 1 / that time. `--fresh` adds a one-worker run
that builds a new simulator and rendering context for every demo (`reuse_renderer=False`,
the behaviour before the context was kept), for comparison.

Last, the machine's own parallelism is measured without demoset: a pure-Python loop in one
process, then in two at once. On a shared or throttled machine two processes may together
get no more done than one; then no number of workers can help, and the line says so.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "examples", "lift_raw.hdf5")


def arrays(path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, np.asarray(obj[()]).tobytes())
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    return out


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def render_floor(dataset: str, cameras: list[str], size: int, steps: int = 20) -> float:
    """Seconds per observation (all cameras) after a reset to a stored state, in-process."""
    from demoset.format import constants as C
    from demoset.format import open_dataset
    from demoset.sim.extract import ExtractOptions, _make_env, source_env_meta

    options = ExtractOptions(camera_names=tuple(cameras), camera_height=size, camera_width=size)
    with open_dataset(dataset) as df:
        demo = df.demos[0]
        states = df.read(demo, C.STATES)
        model = df.demo_attrs(demo).get(C.ATTR_MODEL_FILE)
        env = _make_env(source_env_meta(df), options)
    try:
        env.reset_to({"model": model, "states": states[0]})
        picked = [states[i % len(states)] for i in range(steps)]
        start = time.perf_counter()
        for state in picked:
            env.reset_to({"states": state})
        return (time.perf_counter() - start) / steps
    finally:
        env.close()


def _spin(iterations: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i
    return time.perf_counter() - start


def parallel_capacity(iterations: int = 20_000_000) -> float:
    """Work done per second by two concurrent processes relative to one (2.0 = two free cores)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        alone = pool.apply(_spin, (iterations,))
    with context.Pool(2) as pool:
        start = time.perf_counter()
        pool.map(_spin, [iterations, iterations])
        together = time.perf_counter() - start
    return 2 * alone / together


def main() -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from demoset.sim.extract import extract_obs

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", nargs="?", default=DEFAULT)
    parser.add_argument("--demos", type=int, default=6, help="first N demos (default 6: all)")
    parser.add_argument("--cameras", nargs="*", default=["agentview", "robot0_eye_in_hand"])
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--fresh", action="store_true", help="also run 1 worker with a new renderer per demo"
    )
    args = parser.parse_args()
    if not os.path.exists(args.dataset):
        print(
            f"no dataset at {args.dataset}; run scripts/make_example.sh or pass one",
            file=sys.stderr,
        )
        return 2

    cameras = args.cameras or "none"
    print(
        f"dataset {os.path.relpath(args.dataset)}, first {args.demos} demos, "
        f"cameras {cameras} at {args.size}x{args.size}"
    )
    print(
        f"cpu cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} "
        "(other work slows this down)"
    )
    floor = render_floor(args.dataset, args.cameras, args.size)
    print(
        f"rendering floor: {floor * 1000:.0f} ms per observation "
        f"= at most {1 / floor:.1f} frames/s per worker"
    )
    runs = [(f"workers {w}", w, True) for w in args.workers]
    if args.fresh:
        runs.append(("workers 1, fresh renderer per demo", 1, False))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, workers, reuse in runs:
            out = os.path.join(tmp, f"w{workers}{'' if reuse else '-fresh'}.hdf5")
            cpu0 = cpu_seconds()
            start = time.perf_counter()
            report = extract_obs(
                args.dataset,
                out,
                camera_names=args.cameras,
                camera_height=args.size,
                camera_width=args.size,
                workers=workers,
                n=args.demos,
                reuse_renderer=reuse,
            )
            wall = time.perf_counter() - start
            cpu = cpu_seconds() - cpu0
            results[label] = (report.frames / wall, out)
            print(
                f"{label}: {report.frames} frames in {wall:.1f} s = "
                f"{report.frames / wall:.1f} frames/s ({cpu:.1f} CPU-s, "
                f"{report.frames / cpu:.1f} frames per CPU-second)"
            )
        base_label = runs[0][0]
        base_speed, base_out = results[base_label]
        base_arrays = arrays(base_out)
        for label, _, _ in runs[1:]:
            speed, out = results[label]
            same = arrays(out) == base_arrays
            print(
                f"{label} vs {base_label}: {speed / base_speed:.2f}x speed; "
                f"outputs identical: {same}"
            )
    capacity = parallel_capacity()
    print(
        f"machine check (no demoset): two busy processes get {capacity:.2f}x the work of one "
        "done per second"
        + (" - this machine cannot run two workers in parallel" if capacity < 1.5 else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
