"""Observation extraction speed: frames/s with 1 and with 2 worker processes on the same demos.

    .venv/bin/python benchmarks/extract.py [DATASET] [--demos 6] [--cameras agentview robot0_eye_in_hand]
        [--workers 1 2] [--fresh] [--ray 1 2] [--ray-demo-steps 300]

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

`--ray 1 2` runs the same extraction on a local Ray cluster of 1 and of 2 CPUs
(`--ray local`). The cluster is started before the timing (its start-up is printed
apart); worker processes and their simulators are started inside the timing, as for the
local pool. Then Ray's own cost per demo is measured with tasks that render nothing: an
empty task's round trip (scheduling), and one returning a demo's frames
(`--ray-demo-steps` steps of the cameras, moving frames back through the object store).
Last, the single writer's speed: bytes/s that DatasetWriter takes for demos of that size
(obs and next_obs written; uncompressed), the ceiling for any number of workers.

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
    from demoset.sim.extract_demo import ExtractOptions, make_extraction_env, source_env_meta

    options = ExtractOptions(camera_names=tuple(cameras), camera_height=size, camera_width=size)
    with open_dataset(dataset) as df:
        demo = df.demos[0]
        states = df.read(demo, C.STATES)
        model = df.demo_attrs(demo).get(C.ATTR_MODEL_FILE)
        env = make_extraction_env(source_env_meta(df), options)
    try:
        env.reset_to({"model": model, "states": states[0]})
        picked = [states[i % len(states)] for i in range(steps)]
        start = time.perf_counter()
        for state in picked:
            env.reset_to({"states": state})
        return (time.perf_counter() - start) / steps
    finally:
        env.close()


def ray_runs(args, tmp: str, extract_obs) -> dict[str, tuple[float, str]]:
    """Extraction on local Ray clusters of each CPU count in args.ray."""
    import ray

    from demoset.sim.ray_backend import cluster_overhead

    results = {}
    frame_bytes = args.size * args.size * 3 * max(len(args.cameras), 1)
    for cpus in args.ray:
        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        print(f"ray {cpus} CPUs: cluster started in {time.perf_counter() - start:.1f} s")
        try:
            out = os.path.join(tmp, f"ray{cpus}.hdf5")
            start = time.perf_counter()
            report = extract_obs(
                args.dataset,
                out,
                camera_names=args.cameras,
                camera_height=args.size,
                camera_width=args.size,
                n=args.demos,
                ray="local",  # joins the cluster this process started above
            )
            wall = time.perf_counter() - start
            results[f"ray {cpus}"] = (report.frames / wall, out)
            print(
                f"ray {cpus}: {report.frames} frames in {wall:.1f} s = "
                f"{report.frames / wall:.1f} frames/s"
            )
            if cpus == args.ray[-1]:
                payload = frame_bytes * args.ray_demo_steps
                cost = cluster_overhead("local", demos=10, payload_bytes=payload)
                print(
                    f"ray per-demo overhead: {cost['empty'] * 1000:.1f} ms per empty task "
                    f"(scheduling, round trip); {cost['payload'] * 1000:.1f} ms for a task "
                    f"returning {payload / 1e6:.1f} MB ({args.ray_demo_steps} steps of frames), "
                    f"= {payload / max(cost['payload'], 1e-9) / 1e6:.0f} MB/s back to the writer"
                )
        finally:
            ray.shutdown()
    return results


def writer_speed(size: int, cameras: int, steps: int, demos: int = 3) -> float:
    """Bytes/s of image arrays DatasetWriter takes (obs + derived next_obs), uncompressed."""
    from demoset.format import DatasetWriter

    rng = np.random.default_rng(0)
    obs = {
        f"cam{i}_image": rng.integers(0, 255, (steps, size, size, 3), dtype=np.uint8)
        for i in range(max(cameras, 1))
    }
    written = 2 * sum(a.nbytes for a in obs.values()) * demos
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with DatasetWriter(os.path.join(tmp, "w.hdf5"), mode="w") as w:  # journaled, as extraction
            for _ in range(demos):
                w.add_demo(
                    actions=np.zeros((steps, 7)),
                    obs=obs,
                    states=np.zeros((steps, 32)),
                    derive_next_obs=True,
                )
        return written / (time.perf_counter() - start)


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
    parser.add_argument(
        "--ray", type=int, nargs="*", default=[], help="local Ray clusters of these CPU counts"
    )
    parser.add_argument("--ray-demo-steps", type=int, default=300, help="demo size for overheads")
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
        if args.ray:
            results.update(ray_runs(args, tmp, extract_obs))
            runs += [(f"ray {cpus}", cpus, True) for cpus in args.ray]
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
    speed = writer_speed(args.size, len(args.cameras), args.ray_demo_steps)
    print(
        f"single writer: {speed / 1e6:.0f} MB/s of frames (obs + next_obs, uncompressed, "
        f"journaled commits) = {speed / (2 * args.size * args.size * 3 * max(len(args.cameras), 1)):.0f} "
        "frames/s of these cameras"
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
