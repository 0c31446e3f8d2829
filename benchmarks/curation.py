"""Benchmark: the time of each `demoset edit`, `demoset stats --store` and `demoset doctor`.

Files (made with demoset's writer, as benchmarks/loader.py makes them; nothing downloaded):
- low-dim: 200 demos x 150 steps, Lift-shaped low-dim keys, actions 7, states 32;
- images: the same plus two 84x84 cameras, uncompressed, `--image-demos` demos (50).

Each edit writes a new file from one of them; the time is wall time of the library call
(what the command adds is argument parsing). The doctor runs without replay on both files;
replay is timed on the bundled example (real robosuite Lift demos) and given per demo and
per 100 demos of 150 steps.

Run: `.venv/bin/python benchmarks/curation.py` (about 2-4 minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loader import CAMERAS, build_file  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "lift_example.hdf5")


def norm(arrays):
    return np.linalg.norm(arrays["robot0_eef_pos"], axis=1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def edits(src: str, tmp: str) -> dict[str, float]:
    from demoset.editing import (
        add_key,
        drop_key,
        relabel,
        remove_demos,
        rename_key,
        set_meta,
        trim_demos,
    )
    from demoset.format import open_dataset
    from demoset.format.stored_stats import store_stats

    with open_dataset(src) as df:
        half = df.demos[::2]
    out = os.path.join(tmp, "out.hdf5")
    jobs = {
        "remove-demos (half)": lambda: remove_demos(src, out, half, overwrite=True),
        "trim --start 5 --end 5": lambda: trim_demos(src, out, start=5, end=5, overwrite=True),
        "trim --idle-start": lambda: trim_demos(src, out, idle_start=True, overwrite=True),
        "rename-key": lambda: rename_key(src, out, "object", "object_state", overwrite=True),
        "drop-key": lambda: drop_key(src, out, "object", overwrite=True),
        "add-key": lambda: add_key(src, out, "eef_norm", norm, overwrite=True),
        "relabel --rewards sparse --dones both": lambda: relabel(
            src, out, rewards="sparse", dones="both", overwrite=True
        ),
        "set-meta --lang": lambda: set_meta(src, out, lang="lift the cube", overwrite=True),
        "stats --store (in place)": lambda: store_stats(src),
    }
    return {name: timed(job) for name, job in jobs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-demos", type=int, default=50)
    args = parser.parse_args()
    from demoset.doctor import diagnose
    from demoset.format import open_dataset

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(__file__))) as tmp:
        low = os.path.join(tmp, "low_dim.hdf5")
        img = os.path.join(tmp, "images.hdf5")
        build_file(low, 200, 150, ())
        build_file(img, args.image_demos, 150, CAMERAS)
        sizes = {p: os.path.getsize(p) / 1e6 for p in (low, img)}
        print(
            f"low-dim file: 200 demos, {sizes[low]:.0f} MB; image file: {args.image_demos} demos, {sizes[img]:.0f} MB"
        )
        results = {"low-dim": edits(low, tmp), "images": edits(img, tmp)}
        print(f"\n{'edit':42} {'low-dim (200 demos)':>20} {'images':>12}")
        for name in results["low-dim"]:
            print(f"{name:42} {results['low-dim'][name]:>19.2f}s {results['images'][name]:>11.2f}s")
        print("\ndoctor without replay:")
        for label, path, n in (("low-dim", low, 200), ("images", img, args.image_demos)):
            for frames in (120, None):
                seconds = timed(
                    lambda p=path, f=frames: diagnose(p, replay=False, frames_per_demo=f)
                )
                per100 = seconds / n * 100
                print(
                    f"  {label:8} frames/demo {frames or 'all':>4}: {seconds:.2f} s ({per100:.2f} s per 100 demos)"
                )
    with open_dataset(EXAMPLE) as df:
        demos, steps = len(df.demos), int(df.lengths().sum())
    without = timed(lambda: diagnose(EXAMPLE, replay=False))
    with_replay = timed(lambda: diagnose(EXAMPLE, replay_demos=None))
    per_step = (with_replay - without) / steps
    print(
        f"\ndoctor with replay of all {demos} example demos ({steps} steps, real robosuite Lift): "
        f"{with_replay:.1f} s against {without:.1f} s without; replay {per_step * 1e3:.1f} ms per step "
        f"(environment creation included), about {per_step * 150 * 100:.0f} s per 100 demos of 150 steps"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
