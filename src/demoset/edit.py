"""Whole-file edits that write a NEW file: subset (some demos) and merge (several files).

Demos are copied with HDF5's own object copy, so compressed image chunks are moved as
they are, without decoding. The output is written under a hidden temporary name beside
the target and renamed into place when complete: it is either whole or absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from demoset.errors import DemoNotFoundError, DemosetError, LayoutError, WriteError
from demoset.format import STATS_GROUP, GuardedFile, open_dataset
from demoset.format import constants as C
from demoset.fsutil import is_enospc, replace_durably, same_file, temp_path_beside

Progress = Callable[[int, int], None]


class AtomicOutput:
    """A new HDF5 file written under a temporary name and renamed into place on success."""

    def __init__(self, out: str, overwrite: bool, sources: list[str]):
        self.out = os.fspath(out)
        if os.path.exists(self.out) and not overwrite:
            raise WriteError("output exists; pass --overwrite to replace it", self.out)
        for src in sources:
            if os.path.exists(self.out) and same_file(src, self.out):
                raise WriteError(
                    "output is one of the inputs; choose another output path", self.out
                )
        directory = os.path.dirname(os.path.abspath(self.out))
        if not os.path.isdir(directory):
            raise WriteError(f"directory {directory} does not exist", self.out)
        try:
            self.tmp = temp_path_beside(self.out)
        except OSError as exc:
            raise WriteError(
                f"cannot create the output ({exc.strerror or exc})", self.out
            ) from None
        self.h5: h5py.File | None = None
        self.guard: GuardedFile | None = None

    def __enter__(self) -> h5py.File:
        try:
            # GuardedFile keeps a full disk's I/O errors away from HDF5 (which can crash
            # on them) and reports them at close; see demoset.format.journal.
            self.guard = GuardedFile(self.tmp, create=True)
            self.h5 = h5py.File(self.guard, "w")
        except OSError as exc:
            os.unlink(self.tmp)
            raise WriteError(
                f"cannot create the output ({str(exc).splitlines()[0]})", self.out
            ) from None
        return self.h5

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self.h5 is not None:
                self.h5.close()
            if self.guard is not None:
                if exc_type is None:
                    self.guard.sync()
                self.guard.close()
            if exc_type is None:
                replace_durably(self.tmp, self.out)
                return False
        except OSError as err:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
            raise _write_error(err, self.out) from None
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)
        if self.guard is not None and self.guard.error is not None:
            raise _write_error(self.guard.error, self.out) from None
        if (
            exc_type is not None
            and issubclass(exc_type, OSError)
            and not issubclass(exc_type, DemosetError)
        ):
            raise _write_error(exc, self.out) from None
        return False


def _write_error(exc: BaseException, out: str) -> WriteError:
    if is_enospc(exc):
        return WriteError("no space left on device; nothing was written under this name", out)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return WriteError(f"write failed ({first}); nothing was written under this name", out)


def _copy_demo(
    src: h5py.File, src_demo: str, dst_data: h5py.Group, dst_demo: str, compression=None
) -> int:
    if compression is not None:  # image arrays re-encoded (see demoset.recode)
        from demoset.recode import copy_demo

        grp = src[f"{C.DATA_GROUP}/{src_demo}"]
        copy_demo(grp, dst_data, dst_demo, compression, src.filename)
    else:
        src.copy(src[f"{C.DATA_GROUP}/{src_demo}"], dst_data, name=dst_demo)
    stats = f"{STATS_GROUP}/{src_demo}"
    if stats in src and isinstance(src[stats], h5py.Group):  # statistics travel with the demo
        dst_root = dst_data.file.require_group(STATS_GROUP)
        for key, value in src[STATS_GROUP].attrs.items():
            dst_root.attrs[key] = value
        src.copy(src[stats], dst_root, name=dst_demo)
    grp = dst_data[dst_demo]
    if C.ATTR_NUM_SAMPLES in grp.attrs:
        return int(grp.attrs[C.ATTR_NUM_SAMPLES])
    return int(grp[C.ACTIONS].shape[0]) if C.ACTIONS in grp else 0


def _write_mask(h5: h5py.File, name: str, demos: list[str]) -> None:
    mask = h5.require_group(C.MASK_GROUP)
    mask.create_dataset(name, data=np.array([d.encode() for d in demos], dtype="S"))


def subset(
    path: str | os.PathLike,
    out: str | os.PathLike,
    demos: list[str] | None = None,
    filter_key: str | None = None,
    renumber: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    compression=None,
) -> list[str]:
    """Copy chosen demos (or a filter key's) into a new file; returns the output's demo names.

    Filter keys are carried over, restricted to the copied demos (and renamed with them
    when `renumber` numbers the output demo_0, demo_1, ...). `compression` (a setting or
    `CODEC[:LEVEL[:FRAMES]]`) re-encodes image arrays; None copies them as stored.
    """
    path, out = os.fspath(path), os.fspath(out)
    with open_dataset(path) as df:
        if demos is None and filter_key is None:
            raise DemosetError("choose demos or a filter key to copy", path)
        chosen = list(demos) if demos is not None else df.demos_for(filter_key)
        if filter_key is not None and demos is not None:
            allowed = set(df.demos_for(filter_key))
            chosen = [d for d in chosen if d in allowed]
        known = set(df.demos)
        for d in chosen:
            if d not in known:
                raise DemoNotFoundError(f"no demo named {d!r}", path, f"/data/{d}")
        chosen = C.sorted_demos(dict.fromkeys(chosen))
        masks = {k: df.filter_key_demos(k) for k in df.filter_keys}
        src_attrs = {k: v for k, v in df.h5[C.DATA_GROUP].attrs.items() if k != C.ATTR_TOTAL}
        names = {d: (C.demo_name(i) if renumber else d) for i, d in enumerate(chosen)}
        with AtomicOutput(out, overwrite, [path]) as h5:
            data = h5.create_group(C.DATA_GROUP)
            for key, value in src_attrs.items():
                data.attrs[key] = value
            total = 0
            for i, d in enumerate(chosen):
                total += _copy_demo(df.h5, d, data, names[d], compression)
                if progress:
                    progress(i + 1, len(chosen))
            data.attrs[C.ATTR_TOTAL] = total
            for key, members in masks.items():
                kept = [names[m] for m in members if m in names]
                if kept:
                    _write_mask(h5, key, kept)
    return [names[d] for d in chosen]


def _env_signature(meta) -> tuple:
    if meta is None:
        return (None, None)
    return (meta.env_name, meta.env_type)


def merge(
    paths: list[str | os.PathLike],
    out: str | os.PathLike,
    overwrite: bool = False,
    allow_env_kwargs_mismatch: bool = False,
    progress: Progress | None = None,
    compression=None,
) -> dict[str, list[str]]:
    """Merge datasets into a new file with demos renumbered demo_0.. in input order.

    Environments must agree (env_name and type; env_kwargs too unless allowed). A filter
    key K present in inputs becomes K in the output holding the renamed demos of every
    input's K, and each input's demos are also listed under `from_<file stem>`.
    `compression` re-encodes image arrays as in `subset`. Returns {input path: output demo names}.
    """
    paths = [os.fspath(p) for p in paths]
    out = os.fspath(out)
    if len(paths) < 2:
        raise DemosetError("merge needs at least two datasets")
    files = [open_dataset(p) for p in paths]
    try:
        metas = [f.env_meta for f in files]
        ref = metas[0]
        for p, m in zip(paths[1:], metas[1:]):
            if _env_signature(m) != _env_signature(ref):
                raise LayoutError(
                    f"environment {_env_signature(m)} differs from {paths[0]}'s {_env_signature(ref)}",
                    p,
                    "/data.attrs[env_args]",
                )
            if (
                not allow_env_kwargs_mismatch
                and m is not None
                and ref is not None
                and m.env_kwargs != ref.env_kwargs
            ):
                diff = sorted(
                    k
                    for k in set(m.env_kwargs) | set(ref.env_kwargs)
                    if m.env_kwargs.get(k) != ref.env_kwargs.get(k)
                )
                raise LayoutError(
                    f"env_kwargs differ from {paths[0]}'s ({', '.join(diff[:5])}); pass --allow-env-mismatch to keep the first file's",
                    p,
                    "/data.attrs[env_args]",
                )
        total_demos = sum(len(f.demos) for f in files)
        result: dict[str, list[str]] = {}
        merged_masks: dict[str, list[str]] = {}
        stems: dict[str, int] = {}
        with AtomicOutput(out, overwrite, paths) as h5:
            data = h5.create_group(C.DATA_GROUP)
            if ref is not None:
                data.attrs[C.ATTR_ENV_ARGS] = ref.to_json()
            data.attrs["merged_from"] = json.dumps([os.path.abspath(p) for p in paths])
            total = 0
            index = 0
            for p, f in zip(paths, files):
                renamed = {}
                for d in f.demos:
                    new = C.demo_name(index)
                    index += 1
                    total += _copy_demo(f.h5, d, data, new, compression)
                    renamed[d] = new
                    if progress:
                        progress(index, total_demos)
                result[p] = list(renamed.values())
                for key in f.filter_keys:
                    merged_masks.setdefault(key, []).extend(
                        renamed[m] for m in f.filter_key_demos(key) if m in renamed
                    )
                stem = Path(p).stem
                stems[stem] = stems.get(stem, 0) + 1
                label = stem if stems[stem] == 1 else f"{stem}_{stems[stem]}"
                merged_masks[f"from_{label}"] = list(renamed.values())
            data.attrs[C.ATTR_TOTAL] = total
            for key, members in merged_masks.items():
                _write_mask(h5, key, members)
    finally:
        for f in files:
            f.close()
    return result
