"""Benchmark: lossless image compression of real renders, and loading compressed files.

Files (nothing downloaded): the bundled example's real robosuite renders (two 84x84
cameras, 6 demos, 274 frames), its demos repeated `--copies` times (each copy a new demo,
so the file is big enough for random batches) and stored with `demoset compress`:
uncompressed (contiguous), the default `zstd:9:16`, `zstd:9:8`, the fast-decoding
`lz4hc:9:16`, `lz4hc:9:8` and `blosc2-zstd:5:16`.
With `--large FILE` (e.g. 256x256 renders made by `demoset extract-obs`) its images are
measured too.

Figures:
- size: raw / stored bytes per image key, and `compress` time per GB of frames (CPU time
  of the whole command, one process);
- loader speed: demoset's SequenceDataset (`get_batch`, batch 16, seq_length 10, obs and
  next_obs, low-dim keys too) with cache "low_dim" and None on each file, and robomimic
  0.3.0's SequenceDataset through a DataLoader (torch's default collate, batch 16, 0
  workers, cache "low_dim") on the uncompressed and the zstd:9:16 file. One more row reads
  the uncompressed file with its pages dropped from the page cache before every batch
  (`posix_fadvise(DONTNEED)`, "low_dim-cold"): what reading a raw file many times bigger
  than RAM costs, the case compression is for (its compressed copy can stay in the page
  cache; the other rows have every file there). The loaders take turns of
  `--slice` seconds for `--rounds` rounds in one process (the order turning each round);
  the report gives the median rate of each and the ratios of medians;
- RAM caching (issue 19, item 4): demoset with cache "all" on the uncompressed file (raw
  frames in RAM) and with cache "all" + `cache_compressed=True` on the zstd:9:16 file
  (compressed chunks in RAM, "all+chunks"), in the same turns, against robomimic's "low_dim"
  on the uncompressed file; "RAM held" is what each loader caches (demoset's
  `cached_bytes`; robomimic's: the bytes of the numpy arrays in its `hdf5_cache`), and
  "start-up s" the constructor's wall time (files in the page cache).

Run: `.venv/bin/python benchmarks/compression.py` (about 2 minutes; `--quick` for less).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time

import h5py
import numpy as np

CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")
LOW_DIM = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "lift_example.hdf5")
SETTINGS = ("none", "zstd:9:16", "zstd:9:8", "lz4hc:9:16", "lz4hc:9:8", "blosc2-zstd:5:16")


def repeat_file(src: str, out: str, copies: int) -> None:
    """`src`'s demos `copies` times over (new names), uncompressed, with its env_args."""
    from demoset.format import DatasetWriter, open_dataset
    from demoset.format import constants as C

    with open_dataset(src) as df, DatasetWriter(out, env_meta=df.env_meta, overwrite=True) as w:
        for _ in range(copies):
            for demo in df.demos:
                obs = {k: df.read(demo, f"obs/{k}") for k in (*LOW_DIM, *CAMERAS)}
                nxt = {k: df.read(demo, f"next_obs/{k}") for k in (*LOW_DIM, *CAMERAS)}
                w.add_demo(
                    actions=df.read(demo, C.ACTIONS),
                    obs=obs,
                    next_obs=nxt,
                    rewards=df.read(demo, C.REWARDS),
                    dones=df.read(demo, C.DONES),
                    states=df.read(demo, C.STATES),
                )


def sizes(path: str, label: str, rows: list) -> None:
    """Compress `path` with each setting; a row per (setting, key) of ratio and time."""
    from demoset.compress import compress_file

    with tempfile.TemporaryDirectory() as tmp:
        for spec in SETTINGS[1:] + ("gzip:4:1",):
            out = os.path.join(tmp, "c.hdf5")
            t0 = time.process_time()
            report = compress_file(path, out, spec, overwrite=True)
            cpu = time.process_time() - t0
            gb = report.recoded_raw_bytes / 1e9
            for key, kb in report.keys.items():
                if kb.recoded and key.startswith("obs/"):
                    rows.append((label, spec, key[4:], kb.raw / kb.after, cpu / gb))


def loader_speed(paths: dict[str, str], rounds: int, slice_s: float) -> dict[str, float]:
    import torch

    from demoset.loader import SequenceDataset

    keys = [*LOW_DIM, *CAMERAS]
    common = dict(frame_stack=1, seq_length=10, pad_frame_stack=True, pad_seq_length=True)
    steps = {}
    held: dict[str, int] = {}
    rng = np.random.default_rng(0)
    cases = [(name, cache, False) for name in paths for cache in ("low_dim", None)]
    cases += [("none", "low_dim-cold", False)]
    cases += [("none", "all", False), ("zstd:9:16", "all", True), ("lz4hc:9:16", "all", True)]
    for name, mode, chunks in cases:
        cache = None if mode is None else mode.split("-")[0]
        path, cold = paths[name], None
        if mode == "low_dim-cold":  # a copy of its own, so the warm rows stay warm
            path = paths[name] + ".cold.hdf5"
            shutil.copyfile(paths[name], path)
            cold = os.open(path, os.O_RDONLY)
        t0 = time.perf_counter()
        ds = SequenceDataset(
            path,
            keys,
            ["actions"],
            cache_mode=cache,
            cache_compressed=chunks,
            stats_cache=False,
            **common,
        )
        n = len(ds)

        def step(ds=ds, n=n, cold=cold) -> int:
            if cold is not None:  # none of the file in the page cache
                os.posix_fadvise(cold, 0, 0, os.POSIX_FADV_DONTNEED)
            ds.get_batch(rng.integers(0, n, 16))
            return 16

        label = f"demoset {name} {mode}{'+chunks' if chunks else ''}"
        steps[label] = step
        held[label] = (ds.cached_bytes, time.perf_counter() - t0)
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset as RobomimicDataset

    ObsUtils.initialize_obs_utils_with_obs_specs(
        {"obs": {"low_dim": list(LOW_DIM), "rgb": list(CAMERAS)}}
    )
    import contextlib
    import io

    for name in ("none", "zstd:9:16"):
        # a copy of its own: robomimic opens files with other HDF5 flags than demoset's,
        # and one process may not open the same file both ways
        own = paths[name] + ".robomimic.hdf5"
        shutil.copyfile(paths[name], own)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rm = RobomimicDataset(own, keys, ["actions"], hdf5_cache_mode="low_dim", **common)
        held[f"robomimic {name} low_dim"] = (array_bytes(rm.hdf5_cache), time.perf_counter() - t0)
        loader = torch.utils.data.DataLoader(rm, batch_size=16, shuffle=True)
        state = [iter(loader)]

        def rm_step(state=state, loader=loader) -> int:
            try:
                batch = next(state[0])
            except StopIteration:
                state[0] = iter(loader)
                batch = next(state[0])
            return len(batch["actions"])

        steps[f"robomimic {name} low_dim"] = rm_step

    def turn(step, seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while True:
            n += step()
            el = time.perf_counter() - t0
            if el >= seconds:
                return n / el

    labels = list(steps)
    for label in labels:
        turn(steps[label], 0.2)
    rates = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            gc.collect()
            rates[label].append(turn(steps[label], slice_s))
    return {label: (float(np.median(v)), *held[label]) for label, v in rates.items()}


def array_bytes(value) -> int:
    """Bytes of the numpy arrays in nested dicts / lists (robomimic's hdf5_cache)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(array_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(array_bytes(v) for v in value)
    return 0


def image_bytes(path: str) -> int:
    """Bytes of the camera frames (obs and next_obs) of a file, uncompressed."""
    with h5py.File(path, "r") as f:
        return sum(
            f[f"data/{demo}/{group}/{key}"].nbytes
            for demo in f["data"]
            for group in ("obs", "next_obs")
            for key in CAMERAS
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--slice", type=float, default=0.5)
    ap.add_argument("--large", default=None, help="a file of bigger renders to size too")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-sizes", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.copies, args.rounds, args.slice = 4, 4, 0.3
    from demoset.compress import compress_file

    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "none.hdf5")
        repeat_file(EXAMPLE, base, args.copies)
        rows: list = []
        if not args.skip_sizes:
            sizes(EXAMPLE, "84x84", rows)
            if args.large:
                sizes(args.large, "large", rows)
            print("| renders | setting | key | raw / stored | compress CPU s per GB |")
            print("|---|---|---|---|---|")
            for label, spec, key, ratio, per_gb in rows:
                print(f"| {label} | {spec} | {key} | {ratio:.2f}x | {per_gb:.0f} |")
        paths = {"none": base}
        for spec in SETTINGS[1:]:
            paths[spec] = os.path.join(tmp, spec.replace(":", "_") + ".hdf5")
            compress_file(base, paths[spec], spec, overwrite=True)
        for path in paths.values():  # into the page cache
            with open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        with h5py.File(base, "r") as f:
            frames = sum(int(f["data"][d]["actions"].shape[0]) for d in f["data"])
        print(f"\nloader: {frames} frames, batch 16, seq 10, obs+next_obs, two 84x84 cameras")
        rates = loader_speed(paths, args.rounds, args.slice)
        rm = rates["robomimic none low_dim"][0]
        print(
            "| loader | file | cache | samples/s | vs demoset uncompressed | vs robomimic "
            "| RAM held | start-up s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, (rate, nbytes, startup) in rates.items():
            who, name, cache = label.split(" ")
            own = rates.get(f"demoset none {cache.split('+')[0].split('-')[0]}", (rate,))[0]
            print(
                f"| {who} | {name} | {cache} | {rate:,.0f} | {rate / own:.2f}x | {rate / rm:.1f}x "
                f"| {nbytes / 2**20:,.1f} MB | {startup:.2f} |"
            )
        print(
            f"(raw frames of the image keys, obs and next_obs: {image_bytes(base) / 2**20:,.1f} MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
