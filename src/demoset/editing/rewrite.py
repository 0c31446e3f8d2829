"""The one walk behind every `demoset edit`: copy the demos that stay, change them in the copy.

Demos are copied with HDF5's object copy, so arrays an edit does not touch (compressed image
chunks included) move without being decoded; the edit then changes only what it must in the
new file. Afterwards each demo's `num_samples` is set from its actions, `data/total` is
summed again, every filter key is restricted to the demos that remain, and each demo's
statistics (demoset.format.stored_stats) are computed from what it now holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import h5py
import numpy as np

from demoset.edit import AtomicOutput
from demoset.errors import LayoutError
from demoset.format import STATS_GROUP, DemoFile, group_stats, open_dataset, write_demo_stats
from demoset.format import constants as C

Progress = Callable[[int, int], None]
DemoEdit = Callable[[DemoFile, str, h5py.Group], None]
"""Changes one copied demo in the output: (source file, demo name, output group)."""

_LAYOUT_GROUPS = (C.DATA_GROUP, C.MASK_GROUP, C.STAGING_GROUP, STATS_GROUP)


@dataclass
class RewriteResult:
    """What an edit wrote: the output, the demos it holds, and what was left out."""

    out: str
    demos: list[str]
    removed: list[str] = field(default_factory=list)
    total: int = 0
    dropped_filter_keys: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)
    """Per demo, a short note of what the edit changed (e.g. "trimmed 3 + 0 frames")."""


def rewrite(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    remove: set[str] | None = None,
    edit_demo: DemoEdit | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteResult:
    """Write `out` with every demo of `path` but `remove`, each changed by `edit_demo`."""
    path, out = os.fspath(path), os.fspath(out)
    remove = remove or set()
    with open_dataset(path) as df:
        kept = [d for d in df.demos if d not in remove]
        masks = {k: df.filter_key_demos(k) for k in df.filter_keys}
        data_attrs = {k: v for k, v in df.data_attrs().items() if k != C.ATTR_TOTAL}
        others = [name for name in df.h5.keys() if name not in _LAYOUT_GROUPS]
        result = RewriteResult(out=out, demos=kept, removed=[d for d in df.demos if d in remove])
        with AtomicOutput(out, overwrite, [path]) as h5:
            data = h5.create_group(C.DATA_GROUP)
            for key, value in data_attrs.items():
                data.attrs[key] = value
            for name in others:
                df.h5.copy(df.h5[name], h5, name=name)
            for i, demo in enumerate(kept):
                df.h5.copy(df.group(demo), data, name=demo)
                grp = data[demo]
                if edit_demo is not None:
                    edit_demo(df, demo, grp)
                result.total += _set_num_samples(grp, path, demo)
                write_demo_stats(h5, demo, group_stats(grp))
                if progress:
                    progress(i + 1, len(kept))
            data.attrs[C.ATTR_TOTAL] = result.total
            kept_set = set(kept)
            for key, members in masks.items():
                remaining = [m for m in members if m in kept_set]
                if remaining:
                    h5.require_group(C.MASK_GROUP).create_dataset(
                        key, data=np.array([m.encode() for m in remaining], dtype="S")
                    )
                else:
                    result.dropped_filter_keys.append(key)
    return result


def _set_num_samples(grp: h5py.Group, path: str, demo: str) -> int:
    if C.ACTIONS not in grp:
        raise LayoutError("demo has no actions", path, f"/data/{demo}")
    n = int(grp[C.ACTIONS].shape[0])
    grp.attrs[C.ATTR_NUM_SAMPLES] = n
    return n


def step_datasets(grp: h5py.Group, length: int) -> list[str]:
    """Paths (relative to the demo) of every per-step array: first dimension `length`."""
    found: list[str] = []

    def visit(name: str, node) -> None:
        if isinstance(node, h5py.Dataset) and node.shape and node.shape[0] == length:
            found.append(name)

    grp.visititems(visit)
    return found


def replace_dataset(grp: h5py.Group, name: str, data: np.ndarray) -> None:
    """Replace `grp[name]` by `data`, keeping its dtype, filters, chunking and attributes.

    The creation property list of the old array is reused, so an image array compressed
    with an HDF5 filter plugin stays compressed the same way; the chunk's first dimension
    is cut to the new length when the array got shorter than one chunk.
    """
    old = grp[name]
    attrs = dict(old.attrs)
    dcpl = old.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.CHUNKED:
        chunk = list(dcpl.get_chunk())
        if data.shape and data.shape[0] > 0:
            chunk[0] = max(1, min(chunk[0], data.shape[0]))
        dcpl.set_chunk(tuple(chunk))
    maxshape = tuple(
        h5py.h5s.UNLIMITED if m is None else n
        for m, n in zip(old.maxshape or data.shape, data.shape)
    )
    type_id = old.id.get_type()
    del grp[name]
    space = h5py.h5s.create_simple(data.shape, maxshape)
    new = h5py.Dataset(h5py.h5d.create(grp.id, name.encode(), type_id, space, dcpl=dcpl))
    if data.size:
        new[...] = data
    for key, value in attrs.items():
        new.attrs[key] = value
