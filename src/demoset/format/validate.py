"""validate(path): everything that would make a dataset fail or mislead, with HDF5 paths.

Errors are things robomimic (or demoset's loader) would crash on or silently get wrong;
warnings are legal but suspicious (actions outside [-1, 1], an unfinished staged demo).
Arrays are read one demo at a time, and images are checked by dtype and shape only, so
a large image dataset validates without reading its frames.

Before the layout checks, `check_metadata` walks every object of the file and reads all
of its metadata: every attribute (vlen text included), every variable-length array and
every chunk index. Damage in those structures can make HDF5's C code loop forever (see
format/isolation.py); run in an isolated child (`demoset validate` does), the walk turns
such a file into an error, and a file it walks to the end cannot hang later readers on the
same metadata.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import h5py
import numpy as np

from demoset.errors import DemosetError
from demoset.format import constants as C
from demoset.format.demofile import DemoFile
from demoset.format.env_meta import attr_int
from demoset.format.guards import READ_ERRORS, describe_error, h5_errors
from demoset.format.h5io import check_dataset_safe, open_h5, read_array
from demoset.format.isolation import beat, run_isolated


@dataclass(frozen=True)
class Finding:
    """One problem: level "error" or "warning", where (HDF5 path) and what."""

    level: str
    h5path: str
    message: str
    code: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.level}: {self.h5path}: {self.message}"


IMAGE_WORDS = ("image", "rgb")
FLOAT_CHECK_MAX_BYTES = 256 * 1024 * 1024


class _Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, h5path: str, message: str, code: str) -> None:
        self.findings.append(Finding("error", h5path, message, code))

    def warning(self, h5path: str, message: str, code: str) -> None:
        self.findings.append(Finding("warning", h5path, message, code))


def _looks_like_image_key(key: str) -> bool:
    name = key.rsplit("/", 1)[-1].lower()
    return any(w in name for w in IMAGE_WORDS) and "depth" not in name


def _check_finite(col: _Collector, dset: h5py.Dataset, path: str) -> None:
    if dset.dtype.kind != "f" or dset.size == 0:
        return
    rows = max(
        1, FLOAT_CHECK_MAX_BYTES // max(1, dset.dtype.itemsize * int(np.prod(dset.shape[1:]) or 1))
    )
    bad_nan = bad_inf = 0
    for start in range(0, dset.shape[0], rows):
        block = dset[start : start + rows]
        bad_nan += int(np.isnan(block).sum())
        bad_inf += int(np.isinf(block).sum())
    if bad_nan or bad_inf:
        col.error(dset.name, f"{bad_nan} NaN and {bad_inf} Inf values", "non_finite")


def _check_demo(col: _Collector, df: DemoFile, demo: str) -> tuple[int, np.ndarray | None]:
    """Check one demo; returns its length by num_samples (or actions) and its actions."""
    grp_path = f"/data/{demo}"
    grp = df.group(demo)
    arrays = df.array_keys(demo)
    lengths: dict[str, int] = {}
    for key in arrays:
        dset = df.dataset(demo, key)
        if dset.ndim == 0:
            col.error(
                dset.name, "is a scalar; every per-step array needs a time axis", "scalar_array"
            )
            continue
        lengths[key] = int(dset.shape[0])
    if C.ACTIONS not in arrays:
        col.error(grp_path, "no 'actions' array", "missing_actions")
    num_samples = None
    if C.ATTR_NUM_SAMPLES not in grp.attrs:
        col.error(grp_path, "no num_samples attribute", "missing_num_samples")
    else:
        num_samples = attr_int(grp.attrs[C.ATTR_NUM_SAMPLES])
        if num_samples is None or num_samples < 0:
            col.error(
                grp_path,
                f"num_samples is not a non-negative integer: {grp.attrs[C.ATTR_NUM_SAMPLES]!r}",
                "bad_num_samples",
            )
            num_samples = None
    reference = lengths.get(C.ACTIONS)
    if num_samples is not None and reference is not None and num_samples != reference:
        col.error(
            grp_path,
            f"num_samples is {num_samples} but actions has {reference} steps",
            "num_samples_mismatch",
        )
    expected = reference if reference is not None else num_samples
    if expected is not None:
        for key, n in lengths.items():
            if key == C.STATES and n == 0:
                continue  # empty states are allowed for non-simulator data
            if n != expected:
                col.error(
                    f"{grp_path}/{key}",
                    f"has {n} steps, other arrays of the demo have {expected}",
                    "length_mismatch",
                )

    obs = {k[len(C.OBS) + 1 :]: v for k, v in arrays.items() if k.startswith(C.OBS + "/")}
    nobs = {
        k[len(C.NEXT_OBS) + 1 :]: v for k, v in arrays.items() if k.startswith(C.NEXT_OBS + "/")
    }
    if nobs:
        if set(nobs) != set(obs):
            only_obs = sorted(set(obs) - set(nobs))
            only_next = sorted(set(nobs) - set(obs))
            detail = []
            if only_obs:
                detail.append(f"missing in next_obs: {', '.join(only_obs)}")
            if only_next:
                detail.append(f"only in next_obs: {', '.join(only_next)}")
            col.error(
                f"{grp_path}/next_obs",
                "next_obs keys differ from obs (" + "; ".join(detail) + ")",
                "next_obs_keys",
            )
        for key in sorted(set(nobs) & set(obs)):
            if nobs[key].shape != obs[key].shape or nobs[key].dtype != obs[key].dtype:
                col.error(
                    f"{grp_path}/next_obs/{key}",
                    f"{nobs[key].describe()} differs from obs/{key} {obs[key].describe()}",
                    "next_obs_shape",
                )

    for key, info in arrays.items():
        if not (key.startswith(C.OBS + "/") or key.startswith(C.NEXT_OBS + "/")):
            continue
        if _looks_like_image_key(key):
            if info.dtype != np.uint8 or len(info.shape) != 3 or info.shape[-1] not in (1, 3, 4):
                col.error(
                    f"{grp_path}/{key}",
                    f"image is {info.dtype} {(lengths.get(key, '?'), *info.shape)}; expected uint8 (N, H, W, C)",
                    "image_format",
                )

    actions = None
    for key, info in arrays.items():
        dset = df.dataset(demo, key)
        if dset.ndim == 0:
            continue
        if info.dtype.kind not in "biuf":
            col.error(dset.name, f"dtype {info.dtype} is not numeric", "non_numeric")
            continue
        if info.dtype == np.uint8 and len(info.shape) == 3:
            continue
        _check_finite(col, dset, df.path)
        if key == C.ACTIONS and dset.ndim == 2 and dset.size:
            actions = read_array(dset, df.path)
    return (expected if expected is not None else 0), actions


def validate(
    path: str | os.PathLike, progress: Callable[[int, int], None] | None = None
) -> list[Finding]:
    """Check a dataset and return its findings (empty when it is clean).

    Raises DemosetError only when the file cannot be opened at all; everything else,
    including a missing data group, is a finding.
    """
    path = os.fspath(path)
    col = _Collector()
    h5 = open_h5(path, "r")
    try:
        _sweep_metadata(col, h5, path)
        with h5_errors(path):
            if C.DATA_GROUP not in h5:
                col.error("/data", "no 'data' group: not a robomimic-layout dataset", "no_data")
                return col.findings
            if C.STAGING_GROUP in h5 and isinstance(h5[C.STAGING_GROUP], h5py.Group):
                staged = [str(n) for n in h5[C.STAGING_GROUP].keys()]
                if staged:
                    col.warning(
                        f"/{C.STAGING_GROUP}",
                        f"incomplete demo left by an interrupted writer ({', '.join(sorted(staged))}); "
                        "`demoset repair` drops it",
                        "incomplete_demo",
                    )
    except DemosetError as exc:
        col.error(exc.h5path or "/", exc.message, "unreadable")
        return col.findings
    finally:
        h5.close()

    try:
        df = DemoFile(path)
    except DemosetError as exc:
        col.error(exc.h5path or "/", exc.message, "unreadable")
        return col.findings
    with df:
        try:
            _validate_open(col, df, progress)
        except DemosetError as exc:  # damage outside any one demo (data attrs, mask/)
            col.error(exc.h5path or "/", exc.message, "unreadable")
    return col.findings


def _validate_open(col: _Collector, df: DemoFile, progress) -> None:
    data_attrs = df.h5[C.DATA_GROUP].attrs
    raw = df.is_raw_robosuite
    if C.ATTR_ENV_ARGS not in data_attrs:
        if raw:
            col.error(
                "/data",
                "raw robosuite file (states and actions, no obs): run `demoset convert robosuite FILE` "
                "then `demoset extract-obs` to add observations",
                "raw_robosuite",
            )
        else:
            col.error("/data", "no env_args attribute", "missing_env_args")
    else:
        try:
            _ = df.env_meta  # parsing is the check
        except DemosetError as exc:
            col.error("/data", f"attribute env_args: {exc.message}", "bad_env_args")
        if raw and df.demos:
            col.error(
                f"/data/{df.demos[0]}",
                "no obs group: run `demoset extract-obs` to add observations from the stored states",
                "raw_robosuite",
            )

    total_seen = 0
    lo = hi = None
    worst = 0.0
    demos = df.demos
    if not demos:
        col.warning("/data", "the file has no demos", "no_demos")
    for i, demo in enumerate(demos):
        try:
            grp = df.group(demo)
        except DemosetError as exc:
            col.error(exc.h5path or f"/data/{demo}", exc.message, "bad_demo")
            continue
        try:
            n, actions = _check_demo(col, df, demo)
        except DemosetError as exc:
            col.error(exc.h5path or grp.name, exc.message, "unreadable")
            continue
        except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
            col.error(
                grp.name,
                f"cannot read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                "unreadable",
            )
            continue
        total_seen += n
        if actions is not None and actions.size and np.isfinite(actions).all():
            a_lo, a_hi = float(actions.min()), float(actions.max())
            lo = a_lo if lo is None else min(lo, a_lo)
            hi = a_hi if hi is None else max(hi, a_hi)
            if a_lo < -1.0 or a_hi > 1.0:
                worst = max(worst, abs(a_lo), abs(a_hi))
        if progress:
            progress(i + 1, len(demos))
    if worst > 1.0:
        col.warning(
            "/data/*/actions",
            f"actions outside [-1, 1]: seen min {lo:.4g}, max {hi:.4g} (robomimic expects normalised actions)",
            "actions_out_of_range",
        )

    if C.ATTR_TOTAL not in data_attrs:
        if not raw:
            col.error(
                "/data", f"no total attribute (demos hold {total_seen} samples)", "missing_total"
            )
    else:
        total = attr_int(data_attrs[C.ATTR_TOTAL])
        if total is None:
            col.error(
                "/data", f"total is not an integer: {data_attrs[C.ATTR_TOTAL]!r}", "bad_total"
            )
        elif total != total_seen:
            col.error(
                "/data",
                f"total is {total} but the demos hold {total_seen} samples",
                "total_mismatch",
            )

    demo_set = set(demos)
    for key in df.filter_keys:
        try:
            names = df.filter_key_demos(key)
        except DemosetError as exc:
            col.error(f"/mask/{key}", exc.message, "bad_filter_key")
            continue
        missing = [d for d in names if d not in demo_set]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            col.error(
                f"/mask/{key}",
                f"names {len(missing)} demos that do not exist: {shown}",
                "filter_key_unknown_demo",
            )
        seen: set[str] = set()
        dups = sorted({d for d in names if d in seen or seen.add(d)})
        if dups:
            col.error(
                f"/mask/{key}",
                f"names demos more than once: {', '.join(dups[:5])}",
                "filter_key_duplicate",
            )


# ---------------------------------------------------------------------- metadata walk
MAX_OBJECTS = 1_000_000
"""Most objects the metadata walk visits (a robomimic file of 1000 demos has ~30 000)."""
VLEN_BLOCK_ROWS = 4096


def check_metadata(path: str | os.PathLike) -> list[Finding]:
    """Read every attribute, variable-length array and chunk index of every object.

    Layout-agnostic (any HDF5 file: D4RL, Minari, raw robosuite). Returns findings for
    what cannot be read; raises DemosetError only when the file cannot be opened. Run it
    isolated (`demoset.format.preflight`) on files from strangers before other readers.
    """
    path = os.fspath(path)
    col = _Collector()
    h5 = open_h5(path, "r")
    try:
        _sweep_metadata(col, h5, path)
    finally:
        h5.close()
    return col.findings


def _sweep_metadata(col: _Collector, h5: h5py.File, path: str) -> None:
    """Visit every object reachable through hard links once; soft and external links are
    only noted (following them is what the layout checks refuse)."""
    seen: set[tuple[int, int]] = set()
    stack: list[h5py.HLObject] = [h5]
    visited = 0
    while stack:
        obj = stack.pop()
        name = obj.name or "/"
        beat(name, "object header")
        try:
            info = h5py.h5o.get_info(obj.id)
            key = (info.fileno, info.addr)
        except READ_ERRORS as exc:
            col.error(name, f"cannot read the object header ({describe_error(exc)})", "unreadable")
            continue
        if key in seen:
            continue
        seen.add(key)
        visited += 1
        if visited > MAX_OBJECTS:
            col.error(name, f"more than {MAX_OBJECTS} objects; stopped walking", "too_many_objects")
            return
        _touch_attributes(col, obj, name)
        if isinstance(obj, h5py.Dataset):
            _touch_dataset(col, obj, path)
        elif isinstance(obj, h5py.Group):
            stack.extend(reversed(_children(col, obj, name)))


def _children(col: _Collector, group: h5py.Group, name: str) -> list[h5py.HLObject]:
    beat(name, "member list")
    try:
        names = list(group.keys())
    except READ_ERRORS as exc:
        col.error(name, f"cannot list the group ({describe_error(exc)})", "unreadable")
        return []
    out = []
    for member in names:
        where = f"{name.rstrip('/')}/{member}"
        beat(where, "link")
        try:
            link = group.get(member, getlink=True)
            if not isinstance(link, h5py.HardLink):
                continue  # soft and external links: not followed here
            child = group.get(member)
        except READ_ERRORS as exc:
            col.error(where, f"cannot open ({describe_error(exc)})", "unreadable")
            continue
        if isinstance(child, (h5py.Group, h5py.Dataset)):
            out.append(child)
        elif child is not None:
            _touch_attributes(col, child, where)  # a committed datatype
    return out


def _touch_attributes(col: _Collector, obj: h5py.HLObject, name: str) -> None:
    beat(name, "attribute names")
    try:
        keys = list(obj.attrs.keys())
    except READ_ERRORS as exc:
        col.error(name, f"cannot list the attributes ({describe_error(exc)})", "unreadable")
        return
    for key in keys:
        beat(name, f"attribute {key}")
        try:
            obj.attrs[key]
        except READ_ERRORS as exc:
            col.error(
                name, f"attribute {key!r} cannot be read ({describe_error(exc)})", "unreadable"
            )


def _touch_dataset(col: _Collector, dset: h5py.Dataset, path: str) -> None:
    """Read a dataset's chunk index, and its data when that lives in the global heap."""
    name = dset.name
    try:
        check_dataset_safe(dset, path)
        if dset.chunks is not None:
            beat(name, "chunk index")
            dset.id.get_num_chunks()
        if not dset.dtype.hasobject or dset.shape is None:
            return  # fixed-size data: read (or deliberately not read) by the layout checks
        if dset.shape == ():
            beat(name, "variable-length data")
            read_array(dset, path)
            return
        rows = VLEN_BLOCK_ROWS
        for start in range(0, int(dset.shape[0]), rows):
            beat(name, f"variable-length data from row {start}")
            read_array(dset, path, slice(start, start + rows))
    except DemosetError as exc:
        col.error(exc.h5path or name, exc.message, "unreadable")
    except READ_ERRORS as exc:
        col.error(name, f"cannot read ({describe_error(exc)})", "unreadable")


def preflight(path: str | os.PathLike, stall: float | None = None) -> list[Finding]:
    """Read all of a file's metadata in an isolated child before trusting it in-process.

    Runs `validate.check_metadata` (every attribute, variable-length array and chunk index
    of every object, in any HDF5 layout) in a forked child. Returns its findings (a list
    of `Finding`, empty when everything read); raises UnsafeFileError when HDF5 stops
    responding or crashes on the file (do not open it in-process then), and another
    DemosetError when it cannot be opened at all.
    """
    path = os.fspath(path)
    return run_isolated(check_metadata, path, path=path, stall=stall)
