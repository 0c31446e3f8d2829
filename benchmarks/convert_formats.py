"""Speed and size of demoset's LeRobot and zarr converters on real robosuite renders.

    python benchmarks/convert_formats.py [--repeat N] [--codecs h264,av1,h264-lossless]

Measures, on examples/lift_example.hdf5 (6 demos, 274 frames, two 84x84 cameras) and on
a larger file made of its demos repeated N times (default 20: 120 demos, 5480 frames):
export to LeRobot (per codec) and to zarr, and the import back, each as frames/s and
MB/s (source file MB per second for exports, written file MB per second for imports),
the size of each output against the source file, and the PSNR of lossy video.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time

import h5py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from demoset.convert.demo_record import read_demo, write_demo  # noqa: E402
from demoset.convert.lerobot_export import export_lerobot  # noqa: E402
from demoset.convert.lerobot_import import convert_lerobot  # noqa: E402
from demoset.convert.zarr_replay import convert_zarr, export_zarr  # noqa: E402
from demoset.format import DatasetWriter, open_dataset  # noqa: E402

EXAMPLE = os.path.join(HERE, "..", "examples", "lift_example.hdf5")


def repeated(src: str, out: str, times: int) -> str:
    """A larger file: the demos of `src` written `times` times (gzip images, as extracted)."""
    with (
        open_dataset(src) as df,
        DatasetWriter(out, env_meta=df.env_meta, overwrite=True, image_compression="gzip") as w,
    ):
        k = 0
        for _ in range(times):
            for demo in df.demos:
                rec = read_demo(df, demo)
                rec.name = f"demo_{k}"
                write_demo(w, rec)
                k += 1
    return out


def size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def frames_of(path: str) -> int:
    with h5py.File(path, "r") as f:
        return int(sum(f[f"data/{d}/actions"].shape[0] for d in f["data"]))


class Clock:
    """Wall and CPU seconds of a block (CPU time is steadier on a shared machine)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def row(label, frames, clock, mb, out_bytes, src_bytes, extra="") -> str:
    return (
        f"| {label} | {frames / clock.wall:,.0f} | {frames / clock.cpu:,.0f} "
        f"| {mb / clock.wall:.1f} | {out_bytes / 1e6:.2f} | {out_bytes / src_bytes:.2f}x | {extra} |"
    )


def bench(src: str, codecs: list[str], tmp: str) -> list[str]:
    src_bytes = size(src)
    frames = frames_of(src)
    lines = [
        f"**{os.path.basename(src)}**: {frames} frames, {src_bytes / 1e6:.2f} MB",
        "",
        "| step | frames/s (wall) | frames/CPU-s | MB/s (wall) | output MB | vs source | PSNR (agentview / eye-in-hand) |",
        "|---|---|---|---|---|---|---|",
    ]
    for codec in codecs:
        out = os.path.join(tmp, f"lr_{codec}")
        with Clock() as dt:
            result = export_lerobot(src, out, video_codec=codec, overwrite=True)
        psnrs = " / ".join(
            "exact" if math.isinf(v.psnr) else f"{v.psnr:.1f} dB" for v in result.videos.values()
        )
        video = sum(v.bytes for v in result.videos.values())
        extras = size(os.path.join(out, "meta", "demoset.hdf5"))
        lines.append(
            row(
                f"export lerobot {codec}",
                frames,
                dt,
                src_bytes / 1e6,
                result.bytes,
                src_bytes,
                psnrs,
            )
        )
        lines.append(
            f"| (of which video {video / 1e6:.2f} MB, parquet+meta "
            f"{(result.bytes - video - extras) / 1e6:.2f} MB, meta/demoset.hdf5 {extras / 1e6:.2f} MB) | | | | | | |"
        )
        back = os.path.join(tmp, f"back_{codec}.hdf5")
        with Clock() as dt:
            convert_lerobot(out, back, overwrite=True)
        lines.append(
            row(f"import lerobot {codec}", frames, dt, size(back) / 1e6, size(back), src_bytes)
        )
        shutil.rmtree(out)
        os.remove(back)
    out = os.path.join(tmp, "buf.zarr")
    with Clock() as dt:
        export_zarr(src, out, overwrite=True)
    lines.append(row("export zarr", frames, dt, src_bytes / 1e6, size(out), src_bytes))
    back = os.path.join(tmp, "back_zarr.hdf5")
    with Clock() as dt:
        convert_zarr(out, back, overwrite=True)
    lines.append(row("import zarr", frames, dt, size(back) / 1e6, size(back), src_bytes))
    shutil.rmtree(out)
    os.remove(back)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--codecs", default="h264,av1,h264-lossless")
    args = parser.parse_args()
    codecs = args.codecs.split(",")
    tmp = tempfile.mkdtemp(prefix="demoset-convert-bench-")
    try:
        bench(os.path.abspath(EXAMPLE), codecs, tmp)  # warm-up: imports, codecs, page cache
        lines = bench(os.path.abspath(EXAMPLE), codecs, tmp)
        if args.repeat > 1:
            big = repeated(EXAMPLE, os.path.join(tmp, f"lift_x{args.repeat}.hdf5"), args.repeat)
            lines += [""] + bench(big, codecs, tmp)
        print("\n".join(lines))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
