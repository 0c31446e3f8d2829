"""Observation extraction speed: frames/s with 1 and with 2 worker processes on the same demos.

    .venv/bin/python benchmarks/extract.py [DATASET] [--demos 6] [--cameras agentview robot0_eye_in_hand]

DATASET defaults to the bundled examples/lift_raw.hdf5 (raw robosuite states). Each run
renders every stored state with the given cameras at 84x84 into a temporary file; the
outputs of the two runs are compared byte for byte. Timings include starting the worker
processes and creating their simulators, as a user would see them. Frames per CPU-second
(this process plus its workers) are printed too: wall-clock speed-up needs idle cores,
and on a shared machine the CPU figure shows whether the work itself scales.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    if not os.path.exists(args.dataset):
        print(
            f"no dataset at {args.dataset}; run scripts/make_example.sh or pass one",
            file=sys.stderr,
        )
        return 2

    print(
        f"dataset {os.path.relpath(args.dataset)}, first {args.demos} demos, cameras {args.cameras or 'none'} at {args.size}x{args.size}"
    )
    print(
        f"cpu cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (other work slows this down)"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            out = os.path.join(tmp, f"w{workers}.hdf5")
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
            )
            wall = time.perf_counter() - start
            cpu = cpu_seconds() - cpu0
            results[workers] = (report.frames / wall, out)
            print(
                f"workers {workers}: {report.frames} frames in {wall:.1f} s = "
                f"{report.frames / wall:.1f} frames/s ({cpu:.1f} CPU-s, "
                f"{report.frames / cpu:.1f} frames per CPU-second)"
            )
        base = args.workers[0]
        for workers in args.workers[1:]:
            ratio = results[workers][0] / results[base][0]
            same = arrays(results[workers][1]) == arrays(results[base][1])
            print(f"speed-up {workers} vs {base} workers: {ratio:.2f}x; outputs identical: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
