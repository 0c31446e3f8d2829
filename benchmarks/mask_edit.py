"""How long filter-key edits take on a large image dataset (issue: "well under a second").

Writes an uncompressed two-camera image dataset of about --gb gigabytes (zeros, so it is
quick to make), then times split, filter-size, create, rename and delete. The demo arrays
are never read: edits touch only the small mask group.

    .venv/bin/python benchmarks/mask_edit.py --gb 10 --dir /tmp
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from demoset import masks
from demoset.format import DatasetWriter


def build(path: str, gigabytes: float) -> int:
    steps = 200
    frame = 84 * 84 * 3
    per_demo = steps * frame * 2 * 2  # two cameras, obs + next_obs
    n_demos = max(1, int(gigabytes * 1e9 // per_demo))
    image = np.zeros((steps, 84, 84, 3), np.uint8)
    low = np.zeros((steps, 10), np.float32)
    with DatasetWriter(
        path, env_meta={"env_name": "Lift", "type": 1, "env_kwargs": {}}, overwrite=True
    ) as w:
        for _ in range(n_demos):
            obs = {"agentview_image": image, "robot0_eye_in_hand_image": image, "object": low}
            w.add_demo(np.zeros((steps, 7)), obs=obs, next_obs=obs)
    return n_demos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=10.0)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    path = os.path.join(args.dir, "demoset_mask_bench.hdf5")
    t0 = time.perf_counter()
    n = build(path, args.gb)
    print(
        f"built {os.path.getsize(path) / 1e9:.1f} GB, {n} demos in {time.perf_counter() - t0:.0f} s"
    )
    ops = [
        ("split --ratio 0.1", lambda: masks.split_train_valid(path, 0.1)),
        ("filter-size 50 --random", lambda: masks.filter_by_size(path, min(50, n), mode="random")),
        (
            "mask create",
            lambda: masks.create_filter_key(path, "picked", ["demo_0", "demo_1"], overwrite=True),
        ),
        ("mask rename", lambda: masks.rename_filter_key(path, "picked", "chosen")),
        ("mask delete", lambda: masks.delete_filter_key(path, "chosen")),
    ]
    print(f"{'edit':28s} seconds")
    for name, op in ops:
        t = time.perf_counter()
        op()
        print(f"{name:28s} {time.perf_counter() - t:.4f}")
    os.unlink(path)


if __name__ == "__main__":
    main()
