"""repair(path, out): copy every complete, readable demo of a damaged dataset into a new file.

What is dropped, and why it is safe to drop:
- demos under `/demoset_staging`: a writer was interrupted before the demo was complete,
  so no reader ever saw it under `/data`;
- demos (and filter keys) that cannot be read to the last byte, that link outside the
  file (external links, virtual datasets from other files), or that are not groups.

Everything else is copied as HDF5 stores it (chunks, compression and attributes kept);
`data/total` is recomputed, a missing `num_samples` is filled in from `actions`, filter
keys are restricted to the demos kept, and the kept demos' statistics (`demoset_stats`)
are computed again from the copied arrays. The original is opened read-only and never
changed; the output is written under a hidden temporary name and renamed into place, so
it is complete under its name or absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import h5py
import numpy as np

from demoset.errors import DemosetError, LayoutError, WriteError
from demoset.format import (
    STATS_GROUP,
    GuardedFile,
    attr_int,
    beat,
    check_dataset_safe,
    check_dataset_size,
    check_link_safe,
    group_stats,
    open_h5,
    read_array,
    waiting,
    write_demo_stats,
)
from demoset.format import constants as C
from demoset.fsutil import is_enospc, replace_durably, same_file, temp_path_beside

Progress = Callable[[int, int], None]

READ_BLOCK_BYTES = 64 * 1024 * 1024
"""Largest block read at once while checking that an array is readable."""

_READ_ERRORS = (OSError, RuntimeError, ValueError, TypeError, KeyError, DemosetError)

STUCK = "HDF5 stopped responding while reading it (damaged); left out"
"""Why `repair_isolated` left out an object or attribute (see `skip`)."""


@dataclass
class RepairReport:
    """What `repair` kept and dropped."""

    source: str
    output: str
    kept: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (HDF5 path, why)
    fixed: list[tuple[str, str]] = field(default_factory=list)  # (HDF5 path, what changed)
    filter_keys: dict[str, int] = field(default_factory=dict)  # name -> demos kept
    total: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _first_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, DemosetError) else str(exc)
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__


MAX_DEPTH = 4
"""Deepest group nesting under a demo that repair follows (obs/<key> is depth 2)."""


def _touch_attrs(obj: h5py.HLObject, skip: frozenset[str]) -> None:
    beat(obj.name, "attribute names")
    for key in obj.attrs.keys():
        if f"{obj.name}@{key}" in skip:
            continue
        beat(obj.name, f"attribute {key}")
        obj.attrs[key]


def _check_readable(
    group: h5py.Group, path: str, depth: int = 1, skip: frozenset[str] = frozenset()
) -> None:
    """Read every array and attribute under `group`; raise on the first that fails."""
    if depth > MAX_DEPTH:
        raise LayoutError(
            f"groups nested deeper than {MAX_DEPTH} levels (a link cycle?)", path, group.name
        )
    _touch_attrs(group, skip)
    for name in list(group.keys()):
        check_link_safe(group, name, path)
        obj = group.get(name)
        if obj is None:
            raise LayoutError("dangling link", path, f"{group.name}/{name}")
        if isinstance(obj, h5py.Group):
            _check_readable(obj, path, depth + 1, skip)
            continue
        if not isinstance(obj, h5py.Dataset):
            raise LayoutError("neither a group nor an array", path, f"{group.name}/{name}")
        check_dataset_safe(obj, path)
        check_dataset_size(obj, path)  # declared far beyond what is stored: refused
        _touch_attrs(obj, skip)
        beat(obj.name, "array")
        if obj.shape is None or obj.ndim == 0:
            obj[()]
            continue
        row_bytes = obj.dtype.itemsize * int(np.prod(obj.shape[1:], dtype=np.int64) or 1)
        rows = max(1, READ_BLOCK_BYTES // max(row_bytes, 1))
        if row_bytes > READ_BLOCK_BYTES:
            raise LayoutError(
                f"one step holds {row_bytes} bytes; too large to check", path, obj.name
            )
        for start in range(0, obj.shape[0], rows):
            beat(obj.name, f"array from row {start}")
            obj[start : start + rows]


def _demo_length(group: h5py.Group) -> tuple[int | None, int | None]:
    """(num_samples attribute or None, length of actions or None)."""
    num = attr_int(group.attrs[C.ATTR_NUM_SAMPLES]) if C.ATTR_NUM_SAMPLES in group.attrs else None
    actions = group.get(C.ACTIONS)
    n_actions = (
        int(actions.shape[0])
        if isinstance(actions, h5py.Dataset) and actions.shape and actions.ndim >= 1
        else None
    )
    return num, n_actions


def _listing(group: h5py.Group, path: str) -> list[str]:
    try:
        return list(group.keys())
    except _READ_ERRORS as exc:
        raise LayoutError(f"cannot list the group ({_first_line(exc)})", path, group.name) from None


def repair(
    path: str | os.PathLike,
    out: str | os.PathLike,
    overwrite: bool = False,
    progress: Progress | None = None,
    temp_path: str | os.PathLike | None = None,
    skip: tuple[str, ...] = (),
) -> RepairReport:
    """Write `out` with every complete demo of `path`; returns what was kept and dropped.

    The copy is written to `temp_path` (default: a new hidden file beside `out`) and
    renamed to `out` when complete. `skip` names what to leave out unread: objects
    ("/data/demo_3", "/mask/train") and attributes ("/data/demo_3@model_file");
    `repair_isolated` fills it in with what made HDF5 hang. Raises LayoutError when `path` has no readable `data`
    group (nothing to salvage) and WriteError when `out` cannot be written; `path` is
    never modified.
    """
    path, out = os.fspath(path), os.fspath(out)
    if os.path.exists(out) and not overwrite:
        raise WriteError("output exists; pass --overwrite to replace it", out)
    if os.path.exists(out) and os.path.exists(path) and same_file(path, out):
        raise WriteError("output is the damaged file itself; choose another output path", out)
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise WriteError(f"directory {directory} does not exist", out)
    report = RepairReport(source=path, output=out)
    src = open_h5(path, "r")
    try:
        _repair_into(src, path, out, temp_path, report, progress, frozenset(skip))
    finally:
        src.close()
    return report


def _repair_into(
    src: h5py.File,
    path: str,
    out: str,
    temp_path: str | os.PathLike | None,
    report: RepairReport,
    progress: Progress | None,
    skip: frozenset[str],
) -> None:
    try:
        top = _listing(src, path)
        if C.DATA_GROUP not in top:
            raise LayoutError("no 'data' group: nothing to repair", path, "/data")
        check_link_safe(src, C.DATA_GROUP, path)
        data = src[C.DATA_GROUP]
    except DemosetError:
        raise
    except _READ_ERRORS as exc:
        raise LayoutError(f"cannot open ({_first_line(exc)})", path, "/data") from None
    if not isinstance(data, h5py.Group):
        raise LayoutError("'data' is not a group: nothing to repair", path, "/data")
    demos = C.sorted_demos(_listing(data, path))
    for name in top:
        if name == C.STAGING_GROUP:
            try:
                staged = C.sorted_demos(src[C.STAGING_GROUP].keys())
            except _READ_ERRORS:
                staged = []
            for demo in staged or ["(unreadable)"]:
                report.dropped.append(
                    (f"/{C.STAGING_GROUP}/{demo}", "incomplete: a writer was interrupted")
                )
        elif name not in (C.DATA_GROUP, C.MASK_GROUP, STATS_GROUP):
            report.dropped.append((f"/{name}", "not part of the robomimic layout"))

    try:
        tmp = os.fspath(temp_path) if temp_path is not None else temp_path_beside(out)
    except OSError as exc:
        raise WriteError(f"cannot create the output ({exc.strerror or exc})", out) from None
    guard = None
    try:
        # GuardedFile keeps a full disk's errors away from HDF5 and raises them here.
        guard = GuardedFile(tmp, create=True)
        with h5py.File(guard, "w") as dst:
            dst_data = dst.create_group(C.DATA_GROUP)
            _copy_attrs(data, dst_data, report, (C.ATTR_TOTAL,), skip)
            for i, demo in enumerate(demos):
                _copy_demo(src, data, demo, dst_data, path, report, skip)
                guard.raise_if_failed()
                if progress:
                    progress(i + 1, len(demos))
            dst_data.attrs[C.ATTR_TOTAL] = report.total
            for demo in report.kept:  # rebuilt from the copied arrays, not trusted from the source
                try:
                    stats = group_stats(dst_data[demo])
                except (OSError, ValueError, TypeError, KeyError):
                    continue  # derived data: a reader computes it from the arrays instead
                write_demo_stats(dst, demo, stats)
            if C.MASK_GROUP in top:
                _copy_masks(src, dst, path, set(report.kept), report, skip)
        with waiting(None, "saving the output"):  # an fsync is slow on a busy disk, not stuck
            guard.sync()
            replace_durably(tmp, out)
    except OSError as raised:
        exc = guard.error if guard is not None and guard.error is not None else raised
        if is_enospc(exc):
            raise WriteError("no space left on device; nothing was written", out) from None
        raise WriteError(f"write failed ({_first_line(exc)}); nothing was written", out) from None
    finally:
        if guard is not None:
            guard.close()
        if os.path.exists(tmp):
            os.unlink(tmp)


def _copy_attrs(
    src: h5py.HLObject,
    dst: h5py.HLObject,
    report: RepairReport,
    leave: tuple[str, ...] = (),
    skip: frozenset[str] = frozenset(),
) -> None:
    """Copy the attributes of `src` except those named in `leave` and those in `skip`."""
    try:
        beat(src.name, "attribute names")
        keys = list(src.attrs.keys())
    except _READ_ERRORS as exc:
        report.dropped.append((f"{src.name} attributes", _first_line(exc)))
        return
    for key in keys:
        if key in leave:
            continue
        if f"{src.name}@{key}" in skip:
            report.dropped.append((f"{src.name}.attrs[{key}]", STUCK))
            continue
        try:
            beat(src.name, f"attribute {key}")
            dst.attrs[key] = src.attrs[key]
        except _READ_ERRORS as exc:
            report.dropped.append((f"{src.name}.attrs[{key}]", _first_line(exc)))


def _copy_demo(
    src: h5py.File,
    data: h5py.Group,
    demo: str,
    dst_data: h5py.Group,
    path: str,
    report: RepairReport,
    skip: frozenset[str],
) -> None:
    h5path = f"/{C.DATA_GROUP}/{demo}"
    if h5path in skip:
        report.dropped.append((h5path, STUCK))
        return
    beat(h5path, "demo")
    try:
        check_link_safe(data, demo, path)
        grp = data.get(demo)
        if not isinstance(grp, h5py.Group):
            raise LayoutError("not a group", path, h5path)
        _check_readable(grp, path, skip=skip)
        num, n_actions = _demo_length(grp)
    except _READ_ERRORS as exc:
        report.dropped.append((h5path, f"unreadable: {_first_line(exc)}"))
        return
    if num is None and n_actions is None:
        report.dropped.append((h5path, "no actions and no num_samples"))
        return
    inside = [s for s in skip if s.startswith(h5path + "/") or s.startswith(h5path + "@")]
    try:
        beat(h5path, "copying the demo")
        src.copy(grp, dst_data, name=demo, without_attrs=bool(inside))
        if inside:  # copy the attributes one by one, leaving out those HDF5 hangs on
            _copy_attrs_tree(grp, dst_data[demo], report, skip)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        report.dropped.append((h5path, f"cannot copy: {_first_line(exc)}"))
        if demo in dst_data:
            del dst_data[demo]
        return
    if num is None:
        dst_data[demo].attrs[C.ATTR_NUM_SAMPLES] = n_actions
        report.fixed.append((h5path, f"num_samples set to {n_actions} (length of actions)"))
        num = n_actions
    report.kept.append(demo)
    report.total += max(int(num), 0)


def _copy_attrs_tree(
    src: h5py.Group, dst: h5py.Group, report: RepairReport, skip: frozenset[str]
) -> None:
    """Copy the attributes of `src` and of everything under it (already checked readable)."""
    _copy_attrs(src, dst, report, skip=skip)
    for name in src.keys():
        obj, twin = src[name], dst[name]
        if isinstance(obj, h5py.Group):
            _copy_attrs_tree(obj, twin, report, skip)
        else:
            _copy_attrs(obj, twin, report, skip=skip)


def _copy_masks(
    src: h5py.File,
    dst: h5py.File,
    path: str,
    kept: set[str],
    report: RepairReport,
    skip: frozenset[str] = frozenset(),
) -> None:
    try:
        check_link_safe(src, C.MASK_GROUP, path)
        mask = src[C.MASK_GROUP]
        names = sorted(mask.keys()) if isinstance(mask, h5py.Group) else []
    except _READ_ERRORS as exc:
        report.dropped.append((f"/{C.MASK_GROUP}", f"unreadable: {_first_line(exc)}"))
        return
    dst_mask = dst.create_group(C.MASK_GROUP)
    for name in names:
        h5path = f"/{C.MASK_GROUP}/{name}"
        if h5path in skip:
            report.dropped.append((h5path, STUCK))
            continue
        beat(h5path, "filter key")
        try:
            check_link_safe(mask, name, path)
            dset = mask[name]
            if not isinstance(dset, h5py.Dataset):
                raise LayoutError("not an array", path, h5path)
            values = np.atleast_1d(read_array(dset, path)).reshape(-1).tolist()
            demos = [
                v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
                for v in values
            ]
        except (*_READ_ERRORS, UnicodeDecodeError) as exc:
            report.dropped.append((h5path, f"unreadable: {_first_line(exc)}"))
            continue
        demos = [d for d in demos if d in kept]
        dst_mask.create_dataset(name, data=np.array([d.encode() for d in demos], dtype="S"))
        report.filter_keys[name] = len(demos)


# ---------------------------------------------------------------------------- isolated
MAX_LEFT_OUT = 32
"""Most objects and attributes `repair_isolated` leaves out before giving up."""


def repair_isolated(
    path: str | os.PathLike,
    out: str | os.PathLike,
    overwrite: bool = False,
    progress: Progress | None = None,
    stall: float | None = None,
) -> RepairReport:
    """`repair` in a forked child, for files that may make HDF5 loop forever.

    When HDF5 stops responding (see format/isolation.py) on an attribute, a demo or a
    filter key, the child is killed and repair starts again leaving that part out (one
    stall limit per damaged part). The output is written beside `out` and renamed into
    place by the child; a killed child's partial file is removed. Raises UnsafeFileError
    when HDF5 hangs outside any part repair can leave out.
    """
    from demoset.errors import UnsafeFileError
    from demoset.format import run_isolated

    path, out = os.fspath(path), os.fspath(out)
    left_out: list[str] = []
    while True:
        if os.path.exists(out) and not overwrite:
            raise WriteError("output exists; pass --overwrite to replace it", out)
        try:
            temp = temp_path_beside(out)
        except OSError as exc:
            raise WriteError(f"cannot create the output ({exc.strerror or exc})", out) from None
        try:
            return run_isolated(
                repair,
                path,
                out,
                path=path,
                stall=stall,
                progress=progress,
                cleanup=(temp,),
                overwrite=overwrite,
                temp_path=temp,
                skip=tuple(left_out),
            )
        except UnsafeFileError as exc:
            where = getattr(exc, "stalled_at", "")
            part = _part_to_leave_out(where)
            if part is None or part in left_out or len(left_out) >= MAX_LEFT_OUT:
                what = "stopped responding" if "stopped" in exc.message else "crashed"
                done = f" after leaving out {len(left_out)} damaged parts" if left_out else ""
                raise UnsafeFileError(
                    f"HDF5 {what} while reading {where or 'the file'}{done}: repair cannot "
                    "salvage this file; nothing was written",
                    path,
                ) from None
            left_out.append(part)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)


def _part_to_leave_out(where: str) -> str | None:
    """The `skip` entry for the place HDF5 stopped at ("/data/demo_3 (attribute x)")."""
    h5path, _, detail = where.partition(" (")
    detail = detail[:-1] if detail.endswith(")") else detail
    if not h5path.startswith("/"):
        return None
    if detail.startswith("attribute ") and detail != "attribute names":
        return f"{h5path}@{detail[len('attribute ') :]}"
    parts = h5path.strip("/").split("/")
    if parts[0] in (C.DATA_GROUP, C.MASK_GROUP) and len(parts) >= 2:
        return f"/{parts[0]}/{parts[1]}"
    return None
