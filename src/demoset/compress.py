"""Rewrite a robomimic-layout file with another image storage (`demoset compress`).

The output is a new file written under a hidden temporary name and renamed into place
when complete (edit.py's `AtomicOutput`), so the input is never touched and the output
is whole or absent. Demos are copied by recode.py: image-shaped arrays re-encoded demo by
demo, everything else (filter keys, attributes, other arrays) as HDF5 stores it. With
`verify`, every re-encoded frame is read back from the new file and compared with the
input before the rename.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from demoset.edit import AtomicOutput
from demoset.format import Compression, check_link_safe, h5_errors, open_dataset, parse_compression
from demoset.format import constants as C
from demoset.recode import KeyBytes, arrays_of, copy_demo, recodes, verify_recoded

Progress = Callable[[int, int], None]


@dataclass
class CompressReport:
    """What `compress_file` did: bytes per key (summed over demos), time, verification."""

    output: str
    compression: str
    keys: dict[str, KeyBytes] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0
    verified: bool = False

    @property
    def before(self) -> int:
        return sum(k.before for k in self.keys.values())

    @property
    def after(self) -> int:
        return sum(k.after for k in self.keys.values())

    @property
    def recoded_raw_bytes(self) -> int:
        """Uncompressed bytes of the re-encoded arrays (for time per GB)."""
        return sum(k.raw for k in self.keys.values() if k.recoded)


def compress_file(
    path: str | os.PathLike,
    out: str | os.PathLike,
    compression: str | Compression | None = "zstd",
    overwrite: bool = False,
    verify: bool = False,
    progress: Progress | None = None,
) -> CompressReport:
    """Write `out`: `path` with image arrays stored as `compression` ("none" decompresses).

    `progress(frames_done, frames_total)` counts the frames of re-encoded arrays.
    Raises DemosetError on bad input (the output is then absent).
    """
    setting = parse_compression(compression)
    path, out = os.fspath(path), os.fspath(out)
    report = CompressReport(out, str(setting))
    start = time.perf_counter()
    with open_dataset(path) as df, h5_errors(path):
        h5 = df.h5
        demos = df.demos
        plan: list[tuple[str, str]] = []  # (demo, key) re-encoded
        total = 0
        for demo in demos:
            for key, dset in arrays_of(df.group(demo), path):
                if recodes(dset, setting):
                    plan.append((demo, key))
                    total += int(dset.shape[0])
        done = 0
        with AtomicOutput(out, overwrite, [path]) as dst:
            for k, v in h5.attrs.items():
                dst.attrs[k] = v
            for name in h5:
                if name in (C.DATA_GROUP, C.STAGING_GROUP):
                    continue
                check_link_safe(h5, name, path)
                h5.copy(h5[name], dst, name=name)  # filter keys and anything else at the root
            data_src = h5[C.DATA_GROUP]
            data = dst.create_group(C.DATA_GROUP)
            for k, v in data_src.attrs.items():
                data.attrs[k] = v

            def tick(frames: int) -> None:
                nonlocal done
                done += frames
                if progress is not None:
                    progress(done, total)

            for demo in demos:
                copy_demo(df.group(demo), data, demo, setting, path, report.keys, tick)
            dst.flush()
            report.frames = total
            if verify:
                verify_recoded(df, dst, plan, setting)
                report.verified = True
    report.seconds = time.perf_counter() - start
    return report
