"""Copy one demo group with its image arrays re-encoded as a compression setting.

Shared by `demoset compress` (a whole file, compress.py) and `subset` / `merge` with
`--compression` (edit.py). Image-shaped arrays (see `Compression.applies_to`) are read and
written in blocks of whole chunks of the new layout; every other array is copied as HDF5
stores it; groups (empty ones too) and attributes are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

from demoset.errors import DemosetError, LayoutError
from demoset.format import (
    Compression,
    check_dataset_safe,
    check_link_safe,
    describe_error,
    parse_compression,
    read_failure,
)
from demoset.format import constants as C

BLOCK_BYTES = 64 << 20
"""Largest block of frames read and written at once (whole chunks of the new layout)."""


@dataclass
class KeyBytes:
    before: int = 0
    after: int = 0
    raw: int = 0
    recoded: bool = False


def _stored(dset: h5py.Dataset) -> int:
    try:
        return int(dset.id.get_storage_size())
    except (OSError, RuntimeError):
        return 0


def arrays_of(
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
            yield from arrays_of(obj, path, key + "/", seen, made)
        elif isinstance(obj, h5py.Dataset):
            check_dataset_safe(obj, path)
            yield key, obj


def recodes(dset: h5py.Dataset, setting: Compression) -> bool:
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


def verify_recoded(src_df, out_h5: h5py.File, recoded: list[tuple[str, str]], setting) -> None:
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
    setting: Compression | str | None,
    path: str,
    keys: dict[str, KeyBytes] | None = None,
    frames_done: Callable[[int], None] | None = None,
) -> int:
    """Copy demo group `grp` to data/<name>, image arrays re-encoded as `setting`.

    Attributes are kept; arrays the setting does not apply to are copied as stored.
    Bytes per key are added to `keys`. Returns the demo's num_samples (or actions length).
    """
    setting = parse_compression(setting)
    demo = grp.name.rsplit("/", 1)[-1]
    out_grp = data.create_group(name)
    for k, v in grp.attrs.items():
        out_grp.attrs[k] = v
    for key, dset in arrays_of(grp, path, groups=out_grp):
        parent, _, leaf = key.rpartition("/")
        target = out_grp.require_group(parent) if parent else out_grp
        entry = (keys if keys is not None else {}).setdefault(key, KeyBytes())
        entry.before += _stored(dset)
        entry.raw += int(np.prod(dset.shape or (0,), dtype=np.int64)) * dset.dtype.itemsize
        if recodes(dset, setting):
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
