"""Rewrite a robomimic-layout file with another image storage (`demoset compress`).

The output is a new file written under a hidden temporary name and renamed into place
when complete (edit.py's `_AtomicOutput`), so the input is never touched and the output
is whole or absent. Image-shaped arrays (see `Compression.applies_to`) are re-encoded
demo by demo, in blocks of whole chunks; every other array, the filter keys and all
attributes are copied as HDF5 stores them. With `verify`, every re-encoded frame is read
back from the new file and compared with the input before the rename.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h5py
import numpy as np

from demoset.edit import _AtomicOutput
from demoset.errors import DemosetError, LayoutError
from demoset.format import constants as C
from demoset.format.compression import Compression, parse_compression, read_failure
from demoset.format.demofile import open_dataset
from demoset.format.h5io import check_dataset_safe, check_link_safe, describe_error, h5_errors

Progress = Callable[[int, int], None]
BLOCK_BYTES = 64 << 20
"""Largest block of frames read and written at once (whole chunks of the new layout)."""


@dataclass
class KeyBytes:
    before: int = 0
    after: int = 0
    raw: int = 0
    recoded: bool = False


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


def _stored(dset: h5py.Dataset) -> int:
    try:
        return int(dset.id.get_storage_size())
    except (OSError, RuntimeError):
        return 0


def _datasets(
    group: h5py.Group,
    path: str,
    prefix: str = "",
    seen: set | None = None,
    groups: h5py.Group | None = None,
):
    """(key, dataset) of every array under a demo group; links out of the file refused,
    each object visited once (a soft link back up the tree is not a loop). With `groups`,
    every sub-group (empty ones too) is made there with its attributes as it is met."""
    seen = set() if seen is None else seen
    for name in group:
        check_link_safe(group, name, path)
        try:
            obj = group[name]
        except (KeyError, OSError, ValueError, RuntimeError) as exc:
            raise LayoutError(
                f"cannot open ({describe_error(exc)})", path, f"{group.name}/{name}"
            ) from None
        address = h5py.h5o.get_info(obj.id).addr
        if address in seen:
            continue
        seen.add(address)
        key = f"{prefix}{name}"
        if isinstance(obj, h5py.Group):
            made = None
            if groups is not None:
                made = groups.require_group(name)
                for k, v in obj.attrs.items():
                    made.attrs[k] = v
            yield from _datasets(obj, path, key + "/", seen, made)
        elif isinstance(obj, h5py.Dataset):
            check_dataset_safe(obj, path)
            yield key, obj


def _recodes(dset: h5py.Dataset, setting: Compression) -> bool:
    """Whether `dset` is re-encoded: the setting applies to it, or the setting is "none"
    and it is an image array stored chunked (it is then written contiguous)."""
    if not dset.shape:
        return False
    if setting.applies_to(dset.shape[1:], dset.dtype):
        return True
    return (
        not setting.enabled
        and dset.chunks is not None
        and C.is_image_shape(tuple(dset.shape[1:]), dset.dtype)
    )


def _block_frames(dset: h5py.Dataset, chunk_frames: int) -> int:
    frame = max(1, int(np.prod(dset.shape[1:], dtype=np.int64)) * dset.dtype.itemsize)
    blocks = max(1, BLOCK_BYTES // (frame * max(chunk_frames, 1)))
    return blocks * max(chunk_frames, 1)


def _read(src: h5py.Dataset, path: str, demo: str, key: str, a: int, b: int) -> np.ndarray:
    try:
        return src[a:b]
    except (OSError, ValueError, RuntimeError) as exc:
        raise read_failure(src, path, f"/data/{demo}/{key}", a, b, exc) from None


def _recode(src, dst_group, name, setting, path, demo, key) -> int:
    n = int(src.shape[0])
    kwargs = setting.dataset_kwargs(src.shape[1:], src.dtype, n)
    dst = dst_group.create_dataset(name, shape=src.shape, dtype=src.dtype, **kwargs)
    for k, v in src.attrs.items():
        dst.attrs[k] = v
    step = _block_frames(src, setting.frames)
    for a in range(0, n, step):
        b = min(n, a + step)
        dst[a:b] = _read(src, path, demo, key, a, b)
    return n


def _verify(src_df, out_h5: h5py.File, recoded: list[tuple[str, str]], setting) -> None:
    for demo, key in recoded:
        src = src_df.dataset(demo, key)
        dst = out_h5[f"{C.DATA_GROUP}/{demo}/{key}"]
        step = _block_frames(src, setting.frames)
        for a in range(0, int(src.shape[0]), step):
            b = min(int(src.shape[0]), a + step)
            want = _read(src, src_df.path, demo, key, a, b)
            got = dst[a:b]
            if not np.array_equal(want, got):
                bad = a + int(np.flatnonzero((want != got).reshape(len(want), -1).any(axis=1))[0])
                raise DemosetError(
                    f"verification failed: frame {bad} differs from the input; nothing written",
                    out_h5.filename,
                    f"/data/{demo}/{key}",
                )


def copy_demo(
    grp: h5py.Group,
    data: h5py.Group,
    name: str,
    setting: Compression,
    path: str,
    keys: dict[str, KeyBytes] | None = None,
    frames_done: Callable[[int], None] | None = None,
) -> int:
    """Copy demo group `grp` to data/<name>, image arrays re-encoded as `setting`.

    Attributes are kept; arrays the setting does not apply to are copied as stored.
    Bytes per key are added to `keys`. Returns the demo's num_samples (or actions length).
    """
    demo = grp.name.rsplit("/", 1)[-1]
    out_grp = data.create_group(name)
    for k, v in grp.attrs.items():
        out_grp.attrs[k] = v
    for key, dset in _datasets(grp, path, groups=out_grp):
        parent, _, leaf = key.rpartition("/")
        target = out_grp.require_group(parent) if parent else out_grp
        entry = (keys if keys is not None else {}).setdefault(key, KeyBytes())
        entry.before += _stored(dset)
        entry.raw += int(np.prod(dset.shape or (0,), dtype=np.int64)) * dset.dtype.itemsize
        if _recodes(dset, setting):
            entry.recoded = True
            n = _recode(dset, target, leaf, setting, path, demo, key)
            if frames_done is not None:
                frames_done(n)
        else:
            grp.file.copy(dset, target, name=leaf)
        entry.after += _stored(target[leaf])
    if C.ATTR_NUM_SAMPLES in out_grp.attrs:
        return int(out_grp.attrs[C.ATTR_NUM_SAMPLES])
    return int(out_grp[C.ACTIONS].shape[0]) if C.ACTIONS in out_grp else 0


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
            for key, dset in _datasets(df.group(demo), path):
                if _recodes(dset, setting):
                    plan.append((demo, key))
                    total += int(dset.shape[0])
        done = 0
        with _AtomicOutput(out, overwrite, [path]) as dst:
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
                _verify(df, dst, plan, setting)
                report.verified = True
    report.seconds = time.perf_counter() - start
    return report
