"""Benchmark: demoset.SequenceDataset against robomimic 0.3.0's SequenceDataset.

Builds two files with demoset's writer (nothing is downloaded):

- low-dim: 200 demos x 150 steps shaped like robomimic's Lift low-dim (robot0_eef_pos 3,
  robot0_eef_quat 4, robot0_gripper_qpos 2, object 10, float64; actions 7), with next_obs;
- image: the same low-dim keys plus two 84x84 cameras (agentview_image,
  robot0_eye_in_hand_image), uncompressed (contiguous), 20 demos x 150 steps by default.

Both loaders get the same window configuration (seq_length 10, frame_stack 1, padding on,
load_next_obs True as robomimic's default) and are read through a torch DataLoader with no
workers and a shuffled sampler: robomimic with torch's default collate (as robomimic's
train script does), demoset twice: with `collate_fn=demoset.loader.collate` ("demoset") and
with torch's default collate ("demoset default", what a robomimic user's DataLoader does).

Speed (samples/s): the loaders of a case run side by side in one process, taking turns of
`--slice` seconds (0.5) for `--rounds` rounds (16), the order turning each round. Each
round gives each loader's rate and the ratio of those rates; the report gives the median
over rounds and the 10th-90th percentile of the ratio. Turns seconds apart share the
machine's state, so the ratio does not depend on which minute of a shared machine's load
each loader happened to get, as it did when each loader ran in its own process minutes
apart. Every speed case is then measured a second way: each loader alone in a process of
its own, one after the other, with the same turns and rounds ("alone"; the ratio is that of
the medians). The targets are checked both ways, for both collate paths, and torch's
default collate against demoset's own (target >= 0.9x).

Why robomimic's rate differs between the two ways: its per-batch cost is mostly the
`torch.stack` of the samples' image windows in torch's default collate, which runs on
torch's intra-op threads (one per core). A parallel region ends at a barrier that waits
for every thread, so whenever the other core is busy (another loader's threads in the
same process, or anyone else on a shared machine) each stack waits for the scheduler; see
docs/loader.md for the figures.

Start-up and memory run in fresh Python processes (so resident memory is not blurred by
the allocator's reuse), after building the same loader once on a 2-demo file (so one-time
library costs are not charged to the dataset) and one untimed pass that brings the file
into the page cache:

- start-up: the constructor's wall time (robomimic's "all" includes its get_item cache);
- memory: growth of the process's resident set (psutil RSS, after gc and malloc_trim)
  across the constructor;
- demoset's batch fetch alone (`get_batch`, no DataLoader);
- workers: private memory (USS: pages no other process shares) of 2 DataLoader workers
  over a dataset cached in shared memory, against the resident set of one process that
  read the same batches alone. It includes the batches each worker prepares ahead
  (prefetch_factor 2).

The copy ceiling (moving one image batch's bytes once, nothing else) takes turns with the
image cases, with 1 and 2 threads, from RAM beside cache "all" and from the page cache
beside "low_dim": what any loader handing out batches in fresh memory could reach. Beside
cache "all" a second loop ("needed 2t") moves only the bytes a default-collate batch must
hold (obs and next_obs views of one block where no window is padded): the bound on the
images "all" target.

Run: `.venv/bin/python benchmarks/loader.py` (about 4-6 minutes; `--quick` for less,
`--only images` for the cases whose name has that text; `--train` adds the rows of
robomimic's own train.py with each loader, from benchmarks/robomimic_train.py).
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
from collections.abc import Callable

import numpy as np

LOW_DIM = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10}
CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")
LIFT_ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}}
SEQ_LENGTH = 10
DEMO_STEPS = 150


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


def make_dataset(which: str, path: str, obs_keys: list[str], cache_mode):
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
        **common,
    )


def make_loader(which: str, ds, batch_size: int, workers: int = 0, collate: bool = True):
    """The shuffled DataLoader both loaders are read through: robomimic with torch's
    default collate, demoset with `collate_fn=demoset.loader.collate` or (collate False)
    torch's default collate too."""
    import torch

    kwargs = {}
    if which == "demoset" and collate:
        from demoset.loader import collate

        kwargs["collate_fn"] = collate
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        num_workers=workers,
        persistent_workers=workers > 0,
        **kwargs,
    )


def measure(spec: dict) -> dict:
    """Runs in a child process: construct, read batches, report figures."""
    import contextlib
    import io

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
        warm = make_dataset(which, spec["warmup_path"], obs_keys, spec["cache_mode"])
        warm[0]
        del warm
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass
    base = rss()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ds = make_dataset(which, path, obs_keys, spec["cache_mode"])
    startup = time.perf_counter() - t0
    mem = rss() - base
    loader = make_loader(which, ds, spec["batch_size"], spec.get("workers", 0))
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


def batches_of(loader) -> Callable[[], int]:
    """A step that takes the loader's next batch (a new epoch when one ends); returns its size."""
    state = [iter(loader)]

    def step() -> int:
        try:
            batch = next(state[0])
        except StopIteration:
            state[0] = iter(loader)
            batch = next(state[0])
        return len(batch["actions"])

    return step


def measure_interleaved(spec: dict) -> dict:
    """Runs in a child process: every loader of a case, side by side, in short turns.

    Each loader gets its own DataLoader (as in `measure`). Round after round, each loader
    reads batches for `slice_s` seconds (at least one batch), the order turning by one
    place each round and a garbage collection between turns. A round's rates were measured
    seconds apart, so the ratio of two loaders in one round is hardly touched by load that
    comes and goes over minutes; the report takes the median over rounds.
    Returns {label: [samples/s of each round]}.
    """
    import contextlib
    import io

    for path in {entry["path"] for entry in spec["loaders"]}:  # into the page cache
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    steps: dict[str, Callable[[], int]] = {}
    for entry in spec["loaders"]:
        if entry["which"] == "needed":
            steps[entry["label"]] = needed_ceiling(
                entry["path"], spec["batch_size"], entry["demo_steps"]
            )
            continue
        if entry["which"] == "ceiling":
            steps[entry["label"]] = copy_ceiling(
                entry["path"], spec["batch_size"], entry["threads"], entry["source"]
            )
            continue
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ds = make_dataset(
                entry["which"],
                entry["path"],
                spec["obs_keys"],
                entry["cache_mode"],
            )
        steps[entry["label"]] = batches_of(
            make_loader(entry["which"], ds, spec["batch_size"], collate=entry.get("collate", True))
        )

    def turn(label: str, seconds: float) -> float:
        step = steps[label]
        n = 0
        t0 = time.perf_counter()
        while True:
            n += step()
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return n / elapsed

    labels = list(steps)
    for label in labels:  # untimed: lazy opens, first allocations, the copy tuner's start
        turn(label, spec["slice_s"])
    rates: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(spec["rounds"]):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            gc.collect()
            rates[label].append(turn(label, spec["slice_s"]))
    return rates


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


def needed_ceiling(path: str, batch_size: int, demo_steps: int) -> Callable[[], int]:
    """A step that moves only the bytes a default-collate batch of cache "all" must hold,
    on torch's threads (as `copy_ceiling` with 2 threads), and nothing else: the bound on
    any loader whose batches are separate tensors (one per key) in fresh memory.

    A window's obs and next_obs overlap in all but one step, so a batch with no padded
    window needs T + 1 frames a window and camera (obs and next_obs are views of one
    block). A window that runs past its demo's end differs between obs and next_obs in the
    padding (obs repeats the last step, next_obs the final next observation): no strides
    make them views of one block, and a tensor has one set of strides for the whole batch,
    so such a batch needs 2T frames for every window. Windows start uniformly over a
    demo's `demo_steps` steps (padding on), so the padded batches come as often as in the
    loaders' runs.
    """
    import torch

    frame = 84 * 84 * 3
    frames = os.path.getsize(path) // frame // 2  # each camera's frames held once
    rng = np.random.default_rng(1)
    sources = [
        torch.from_numpy(rng.integers(0, 256, (frames, frame), dtype=np.uint8)) for _ in CAMERAS
    ]
    targets = [
        torch.empty((batch_size * 2 * SEQ_LENGTH, frame), dtype=torch.uint8) for _ in CAMERAS
    ]
    block = np.arange(SEQ_LENGTH + 1)
    apart = np.concatenate([np.arange(SEQ_LENGTH), np.arange(SEQ_LENGTH) + 1])
    high = frames - SEQ_LENGTH - 1

    def step() -> int:
        padded = bool((rng.integers(0, demo_steps, batch_size) > demo_steps - SEQ_LENGTH).any())
        first = rng.integers(0, high, batch_size)
        rows = torch.from_numpy((first[:, None] + (apart if padded else block)).ravel())
        for src, out in zip(sources, targets):
            torch.index_select(src, 0, rows, out=out[: len(rows)])
        return batch_size

    return step


def copy_ceiling(path: str, batch_size: int, threads: int, source: str) -> Callable[[], int]:
    """A step that moves one image batch's bytes once and does nothing else: the bound on
    any loader that hands out batches in fresh memory. Returns the samples it stands for.

    Gathers random 10-step windows of four 84x84x3 arrays (two cameras, obs and next_obs)
    into reused output arrays, at `batch_size` windows each: from arrays in RAM as big as
    the file (source "ram"), or with os.preadv from the image file, which the page cache
    holds (source "file"). From RAM, 1 thread uses numpy's take and more use one
    `torch.index_select` per array on torch's threads (the faster way measured here); from
    the file, with 2 threads each thread moves two of the four.
    """
    from concurrent.futures import ThreadPoolExecutor

    frame = 84 * 84 * 3
    size = os.path.getsize(path)
    frames = size // frame // 4
    rng = np.random.default_rng(0)
    outs = [np.ones((batch_size * SEQ_LENGTH, 84, 84, 3), dtype=np.uint8) for _ in range(4)]
    if source == "ram":
        caches = [rng.integers(0, 256, (frames, 84, 84, 3), dtype=np.uint8) for _ in range(4)]
        high = frames - SEQ_LENGTH

        def move(k: int, starts: np.ndarray) -> None:
            flat = (starts[:, None] + np.arange(SEQ_LENGTH)).ravel()
            caches[k].take(flat, axis=0, out=outs[k], mode="clip")

    else:
        fd = os.open(path, os.O_RDONLY)
        windows = [
            [o[i * SEQ_LENGTH : (i + 1) * SEQ_LENGTH] for i in range(batch_size)] for o in outs
        ]
        high = size - SEQ_LENGTH * frame

        def move(k: int, starts: np.ndarray) -> None:
            for place, start in zip(windows[k], starts):
                os.preadv(fd, [place], int(start))

    if source == "ram" and threads > 1:
        import torch  # its threads: one per CPU, as demoset's copies get them

        sources = [torch.from_numpy(c.reshape(frames, -1)) for c in caches]
        targets = [torch.from_numpy(o.reshape(len(o), -1)) for o in outs]

        def step() -> int:
            for k, starts in enumerate(rng.integers(0, high, (4, batch_size))):
                flat = torch.from_numpy((starts[:, None] + np.arange(SEQ_LENGTH)).ravel())
                torch.index_select(sources[k], 0, flat, out=targets[k])
            return batch_size

        return step

    pool = ThreadPoolExecutor(threads)

    def step() -> int:
        list(pool.map(move, range(4), rng.integers(0, high, (4, batch_size))))
        return batch_size

    return step


TORCH_THREADS: int | None = None
"""--torch-threads: torch's intra-op threads in every measuring process (None: torch's default)."""


def run_child(spec: dict) -> dict:
    env = dict(os.environ)
    if TORCH_THREADS is not None:  # read by torch (OpenMP) when it starts
        env["OMP_NUM_THREADS"] = str(TORCH_THREADS)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env,
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


def paired(rates: dict, label: str, base: str) -> list[float]:
    """Per-round ratios of loader `label` to loader `base` (rates of one round)."""
    return [a / b for a, b in zip(rates[label], rates[base])]


def collate_ways(side: dict, alone: dict) -> dict:
    """Ratios of a case measured both ways, with both collate paths.

    side: {label: per-round rates} of one process; alone: the same labels, each from a
    process of its own. Returns {"ratio": {(way, path): x robomimic}, "default_share":
    {way: default collate / demoset's collate}, "text": {...: printable}}.
    """
    base = "robomimic file" if "robomimic file" in side else "robomimic"
    ratio, share, text = {}, {}, {}
    for path, label in (("collate", "demoset"), ("default", "demoset default")):
        med, lo, hi = spread(paired(side, label, base))
        ratio[("side by side", path)] = med
        text[f"side by side {path}"] = f"{med:.1f}x [{lo:.1f}-{hi:.1f}]"
        ratio[("alone", path)] = float(np.median(alone[label]) / np.median(alone[base]))
        text[f"alone {path}"] = f"{ratio[('alone', path)]:.1f}x"
    med, lo, hi = spread(paired(side, "demoset default", "demoset"))
    share["side by side"] = med
    share["alone"] = float(np.median(alone["demoset default"]) / np.median(alone["demoset"]))
    text["default/collate"] = (
        f"{med:.2f} [{lo:.2f}-{hi:.2f}] side by side, {share['alone']:.2f} alone"
    )
    return {"ratio": ratio, "default_share": share, "text": text, "base": base}


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, 10th percentile, 90th percentile)."""
    med, lo, hi = np.percentile(values, [50, 10, 90])
    return float(med), float(lo), float(hi)


TARGETS = {
    "low-dim, cache all": 20,
    "images, cache low_dim": 10,
    "images, cache None": 10,
    "images, cache all": 20,
}


def plot_ratios(speed: dict, png: str) -> None:
    """Each round's ratio, demoset over its robomimic baseline, per case, beside the target;
    for images "all" also the 2-thread copy ceiling's ratio in the same rounds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(speed))
    for ax, (name, rates) in zip(np.atleast_1d(axes), speed.items()):
        base = "robomimic file" if "robomimic file" in rates else "robomimic"
        series = [("demoset", "#1f77b4"), ("demoset default", "#9ecae1")]
        if name == "images, cache all":
            series += [("copy 2t", "#999999"), ("needed 2t", "#555555")]
        labels = []
        for x, (label, color) in enumerate(s for s in series if s[0] in rates):
            values = paired(rates, label, base)
            jitter = np.linspace(-0.15, 0.15, len(values))
            ax.scatter(x + jitter, values, s=12, color=color, zorder=3)
            ax.hlines(np.median(values), x - 0.3, x + 0.3, color=color, linewidth=2.5, zorder=4)
            labels.append(
                {
                    "demoset default": "default\ncollate",
                    "copy 2t": "copy\nceiling",
                    "needed 2t": "needed\nbytes",
                }.get(label, label)
            )
        ax.axhline(TARGETS[name], color="#d62728", linestyle="--", linewidth=1.2)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylim(0, max(ax.get_ylim()[1], 1.15 * TARGETS[name]))
        ax.set_title(name.replace(", cache ", "\ncache "), fontsize=10)
        ax.grid(axis="y", color="#e6e6e6")
        ax.set_axisbelow(True)
    np.atleast_1d(axes)[0].set_ylabel("x robomimic samples/s")
    fig.suptitle(
        "demoset / robomimic per 0.5 s round (bar: median; red: target; images all: "
        "against robomimic reading from the file)",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.07, right=0.99, top=0.78, bottom=0.14, wspace=0.35)
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    partial = png + ".partial"
    fig.savefig(partial, format="png")
    os.replace(partial, png)  # a run stopped half-way leaves the last picture whole


def print_ceilings(speed: dict) -> None:
    """What the image cases reached against the copy ceilings of the same rounds."""
    ram, page = speed.get("images, cache all"), speed.get("images, cache low_dim")

    def part(rates: dict, label: str, base: str) -> str:
        return "{:.0%} [{:.0%}-{:.0%}]".format(*spread(paired(rates, label, base)))

    batch_bytes = 16 * SEQ_LENGTH * len(CAMERAS) * 2 * 84 * 84 * 3
    print(
        f"\ncopy ceiling, in the same rounds as the loaders: one image batch (16 x {SEQ_LENGTH} "
        f"steps, {len(CAMERAS)} cameras, obs + next_obs) is {fmt_mb(batch_bytes).strip()}."
    )
    if ram is not None:
        print(
            f"- from RAM, moving those bytes once reached {np.median(ram['copy 1t']):,.0f} "
            f"samples/s with 1 thread and {np.median(ram['copy 2t']):,.0f} with 2 "
            "({:.1f}x [{:.1f}-{:.1f}] robomimic from the file); ".format(
                *spread(paired(ram, "copy 2t", "robomimic file"))
            )
            + f"demoset's images all reached {part(ram, 'demoset', 'copy 2t')} of the 2-thread one"
        )
        print(
            "- bound on images all: moving only the bytes a default-collate batch must hold "
            f"({SEQ_LENGTH + 1} frames a window and camera, {2 * SEQ_LENGTH} in a batch with a "
            f"padded window), with 2 threads and nothing else, reached "
            f"{np.median(ram['needed 2t']):,.0f} samples/s: "
            "{:.1f}x [{:.1f}-{:.1f}] robomimic from the file (target 20x); ".format(
                *spread(paired(ram, "needed 2t", "robomimic file"))
            )
            + f"demoset reached {part(ram, 'demoset', 'needed 2t')} of it, with torch's "
            f"default collate {part(ram, 'demoset default', 'needed 2t')}"
        )
    if page is not None:
        print(
            f"- from the page cache, moving those bytes once reached "
            f"{np.median(page['copy 1t']):,.0f} samples/s with 1 thread and "
            f"{np.median(page['copy 2t']):,.0f} with 2; demoset's images low_dim reached "
            f"{part(page, 'demoset', 'copy 2t')} of the 2-thread one"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help="where to write the benchmark files (default: a temp dir)")
    parser.add_argument("--image-demos", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="fewer batches and rounds (noisier)")
    parser.add_argument("--only", default="", help="run only the cases whose name has this text")
    parser.add_argument("--plot", help="also draw each round's ratios into this PNG file")
    parser.add_argument(
        "--rounds", type=int, default=16, help="rounds of turns in the speed runs (default 16)"
    )
    parser.add_argument(
        "--slice", type=float, default=0.5, help="seconds of each loader's turn (default 0.5)"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch's intra-op threads in the measuring processes (default: torch's, one per "
        "core); 1 shows robomimic at its best on a busy machine (see docs/loader.md)",
    )
    parser.add_argument(
        "--alone-runs",
        type=int,
        default=2,
        help="processes per loader for the 'alone' speeds, the loaders taking turns (default 2)",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="also run benchmarks/robomimic_train.py: robomimic's train.py epoch time and data "
        "wait with its own loader and with demoset's (low-dim and images; a few minutes more)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="fresh-process runs of each loader per case for start-up and memory (default 1)",
    )
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        fn = (
            measure_single_process
            if spec.get("single")
            else measure_interleaved
            if spec.get("loaders")
            else measure
        )
        print(json.dumps(fn(spec)))
        return 0

    global TORCH_THREADS
    TORCH_THREADS = args.torch_threads
    scale = 0.3 if args.quick else 1.0
    rounds = max(int(args.rounds * (0.5 if args.quick else 1.0)), 3)
    workdir = args.dir or tempfile.mkdtemp(prefix="demoset-bench-")
    low_path = os.path.join(workdir, "lowdim.hdf5")
    img_path = os.path.join(workdir, "image.hdf5")
    t0 = time.perf_counter()
    if not os.path.exists(low_path):
        build_file(low_path, 200, DEMO_STEPS, ())
    if not os.path.exists(img_path):
        build_file(img_path, args.image_demos, DEMO_STEPS, CAMERAS)
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
        ("low-dim, cache all", low_path, low_keys, "all", 100, b(100), b(1000)),
        ("images, cache low_dim", img_path, img_keys, "low_dim", 16, b(20), b(200)),
        ("images, cache None", img_path, img_keys, None, 16, b(20), b(200)),
        ("images, cache all", img_path, img_keys, "all", 16, b(100), b(200)),
    ]
    cases = [c for c in cases if args.only in c[0]]

    # 1. fresh processes: start-up, memory, get_batch alone (speed comes from step 2)
    alone = {}
    for name, path, keys, mode, bs, rm_batches, ds_batches in cases:
        for _ in range(args.repeat):
            for label, batches in (("robomimic", rm_batches), ("demoset", ds_batches)):
                spec = dict(
                    which=label,
                    path=path,
                    warmup_path=warm_path,
                    obs_keys=keys,
                    cache_mode=mode,
                    batch_size=bs,
                    batches=batches,
                )
                r = run_child(spec)
                old = alone.get((name, label))
                if old is not None:  # the shortest start-up, the smallest growth
                    r["startup_s"] = min(r["startup_s"], old["startup_s"])
                    r["rss_delta"] = min(r["rss_delta"], old["rss_delta"])
                alone[(name, label)] = r
                print(
                    f"  {name:24s} {label:10s} start-up {r['startup_s']:6.2f} s  RSS +{fmt_mb(r['rss_delta'])}"
                    f"  (alone: {r['samples_per_s']:,.0f} samples/s)",
                    flush=True,
                )

    # 2. speed: the loaders of a case side by side in one process, taking short turns
    speed, solo = {}, {}
    for name, path, keys, mode, bs, _, _ in cases:
        entries = [dict(label="robomimic", which="robomimic", path=path, cache_mode=mode)]
        if mode == "all" and path == img_path:  # the "all" target is against file reads
            entries.append(
                dict(label="robomimic file", which="robomimic", path=path, cache_mode="low_dim")
            )
        entries.append(dict(label="demoset", which="demoset", path=path, cache_mode=mode))
        entries.append(
            dict(
                label="demoset default", which="demoset", path=path, cache_mode=mode, collate=False
            )
        )
        if path == img_path and mode in ("all", "low_dim"):  # the copy ceiling, in the same rounds
            source = "ram" if mode == "all" else "file"
            for threads in (1, 2):
                entries.append(
                    dict(
                        label=f"copy {threads}t",
                        which="ceiling",
                        path=path,
                        source=source,
                        threads=threads,
                    )
                )
        if path == img_path and mode == "all":  # the bytes a batch must hold, moved alone
            entries.append(
                dict(label="needed 2t", which="needed", path=path, demo_steps=DEMO_STEPS)
            )
        spec = dict(
            loaders=entries, obs_keys=keys, batch_size=bs, rounds=rounds, slice_s=args.slice
        )
        speed[name] = run_child(spec)
        med = {label: float(np.median(v)) for label, v in speed[name].items()}
        print(
            f"  {name:24s} side by side: "
            + "  ".join(f"{label} {rate:,.0f}/s" for label, rate in med.items()),
            flush=True,
        )
        # 3. the same loaders again, each alone in a process of its own, one after another
        # (the same turns, no other loader in the process); each loader's rounds are split
        # over --alone-runs processes, the loaders taking turns, so that each meets the
        # machine's load of the same minutes
        solo[name] = {}
        part = max(rounds // args.alone_runs, 2)
        for _ in range(args.alone_runs):
            for entry in entries:
                if entry["which"] in ("ceiling", "needed"):
                    continue
                spec = dict(
                    loaders=[entry], obs_keys=keys, batch_size=bs, rounds=part, slice_s=args.slice
                )
                for label, rates in run_child(spec).items():
                    solo[name].setdefault(label, []).extend(rates)
        med = {label: float(np.median(v)) for label, v in solo[name].items()}
        print(
            f"  {name:24s} alone:        "
            + "  ".join(f"{label} {rate:,.0f}/s" for label, rate in med.items()),
            flush=True,
        )
    if args.plot:
        plot_ratios(speed, args.plot)
        print(f"ratios per round drawn in {args.plot}")
    print()
    print(
        "both collate paths, both ways (side by side: median of per-round ratios [10th-90th "
        "percentile]; alone: ratio of the medians of separate processes)"
    )
    ways = {name: collate_ways(speed[name], solo[name]) for name in speed}
    for name, way in ways.items():
        print(f"{name:24s} " + "; ".join(f"{k} {v}" for k, v in way["text"].items()))
    print_ceilings(speed)
    if len(cases) < 4:  # a partial run (--only): what ran, no verdicts
        return 0

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
    print(
        f"speed: {rounds} rounds of {args.slice:g} s turns per loader in one process; samples/s are medians "
        "over rounds, ratios the median of each round's ratio [10th-90th percentile]"
    )
    header = f"{'case':24s} | {'robomimic/s':>12s} {'demoset/s':>12s} {'ratio':>20s} | {'default collate':>20s} | {'rm start':>8s} {'ds start':>8s} | {'rm RSS':>11s} {'ds RSS':>11s} | {'ds get_batch/s':>14s}"
    print(header)
    print("-" * len(header))
    ratios = {}
    for name, *_ in cases:
        rates = speed[name]
        base = "robomimic file" if "robomimic file" in rates else "robomimic"
        ratios[name] = spread(paired(rates, "demoset", base))
        med, lo, hi = ratios[name]
        dflt = "{:5.1f}x [{:.1f}-{:.1f}]".format(*spread(paired(rates, "demoset default", base)))
        rm_a, ds_a = alone[(name, "robomimic")], alone[(name, "demoset")]
        print(
            f"{name:24s} | {np.median(rates[base]):12,.0f} {np.median(rates['demoset']):12,.0f} "
            f"{f'{med:5.1f}x [{lo:.1f}-{hi:.1f}]':>20s} | {dflt:>20s} | "
            f"{rm_a['startup_s']:7.2f}s {ds_a['startup_s']:7.2f}s | {fmt_mb(rm_a['rss_delta'])} {fmt_mb(ds_a['rss_delta'])} | {ds_a['get_batch_per_s']:14,.0f}"
        )
    all_rates = speed["images, cache all"]
    vs_all = spread(paired(all_rates, "demoset", "robomimic"))
    print(
        "images, cache all is against robomimic reading images from the file (its low_dim mode); "
        f'against robomimic\'s own "all" ({np.median(all_rates["robomimic"]):,.0f}/s): '
        "{:.1f}x [{:.1f}-{:.1f}]".format(*vs_all)
    )
    print()

    def verdict(ok: bool) -> str:
        return "MET " if ok else "MISS"

    low_rm, low_ds = (
        alone[("low-dim, cache all", "robomimic")],
        alone[("low-dim, cache all", "demoset")],
    )
    low_rm_rate = float(np.median(speed["low-dim, cache all"]["robomimic"]))
    lines = [
        (
            True,
            f"low-dim all: demoset's batch fetch alone (get_batch) {low_ds['get_batch_per_s'] / low_rm_rate:.1f}x "
            "robomimic through the DataLoader (for reference)",
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
    for name, way in ways.items():  # every speed target: both ways, both collate paths
        against = (
            "robomimic reading images from the file" if way["base"] != "robomimic" else "robomimic"
        )
        for (how, path), x in way["ratio"].items():
            lines.append(
                (
                    x >= TARGETS[name],
                    f"{name}: {x:.1f}x {against}, {how}, {path} collate (target >= {TARGETS[name]}x)",
                )
            )
        for how, x in way["default_share"].items():
            lines.append(
                (
                    x >= 0.9,
                    f"{name}: torch's default collate at {x:.2f}x the speed of collate_fn=collate, {how} (target >= 0.9x)",
                )
            )
    all_rm, all_ds = (
        alone[("images, cache all", "robomimic")],
        alone[("images, cache all", "demoset")],
    )
    lines += [
        (
            all_ds["rss_delta"] <= 1.1 * img_bytes,
            f"images all: memory {all_ds['rss_delta'] / img_bytes:.2f}x the image bytes (target <= 1.1x); robomimic all {all_rm['rss_delta'] / img_bytes:.2f}x",
        ),
    ]
    for name, (single, with_workers, bs) in workers.items():
        added = with_workers["worker_uss"]
        lines.append(
            (
                added < 0.1 * single["rss"],
                f"{name} cache all, batch {bs}: 2 DataLoader workers add {fmt_mb(added).strip()} of private memory (USS) to one "
                f"process of {fmt_mb(single['rss']).strip()} RSS ({added / single['rss']:.1%}; target < 10%)",
            )
        )
    for ok, text in lines:
        print(f"[{verdict(ok)}] {text}")
    if args.train:  # the rows of robomimic's own train.py, in a process of their own
        print("\nrobomimic's train.py with its own loader and with demoset's:", flush=True)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "robomimic_train.py")
        subprocess.run([sys.executable, script] + (["--quick"] if args.quick else []), check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
