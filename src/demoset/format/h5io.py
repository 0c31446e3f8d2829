"""Opening HDF5 files with errors people can act on, and reading untrusted ones safely.

h5py's errors are long and cryptic ("unable to lock file, errno = 11"); `open_h5` turns
them into one-line `DemosetError`s that name the file and say what to do, after passing
the commit gate (format/locking.py). The rest refuses what an untrusted file could do to
its reader: links and virtual datasets pointing outside the file, arrays declaring far
more bytes than they store, reads that would not fit in memory (`read_array`).
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np

from demoset.errors import FileAccessError, FileLockedError, LayoutError, UnsafeFileError
from demoset.format.compression import filter_ids, read_failure, register_filters
from demoset.format.guards import READ_ERRORS, h5_errors
from demoset.format.isolation import beat
from demoset.format.journal import recover_if_abandoned
from demoset.format.locking import COMMIT_WAIT, reader_gate

LOCK_HINT = (
    "another process has it open for writing (HDF5 file locking); wait for it to finish, "
    "or read with swmr=True / --swmr to follow a file that a demoset writer is appending to"
)


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text and (
        "unable" in text or "errno = 11" in text or "resource temporarily" in text
    )


def translate_open_error(exc: BaseException, path: str | os.PathLike) -> FileAccessError:
    """Map an exception from h5py.File(...) to a one-line FileAccessError."""
    path = os.fspath(path)
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "No such file" in text or "errno = 2" in text:
        return FileAccessError("no such file", path)
    if isinstance(exc, IsADirectoryError) or os.path.isdir(path):
        return FileAccessError("is a directory, not an HDF5 file", path)
    if _is_lock_error(exc):
        return FileLockedError(LOCK_HINT, path)
    if isinstance(exc, PermissionError) or "Permission denied" in text or "errno = 13" in text:
        return FileAccessError("permission denied", path)
    if "signature" in text or "not an hdf5" in text.lower():
        return FileAccessError("not an HDF5 file", path)
    if "already open for write" in text or "h5clear" in text:
        return FileAccessError(
            "HDF5 marks this file as still open by a writer that did not close it; "
            "if no writer runs, clear the flag with `h5clear -s FILE`",
            path,
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return FileAccessError(f"cannot open as HDF5 ({first})", path)


def open_h5(
    path: str | os.PathLike,
    mode: str = "r",
    swmr: bool = False,
    lock_timeout: float = 0.0,
    **kwargs,
) -> h5py.File:
    """Open an HDF5 file, retrying for `lock_timeout` seconds while a writer holds its lock.

    Before opening, a commit that a killed demoset writer left half-copied is finished
    (format/journal.py), and a reader waits while a live writer copies one into place.
    Raises FileAccessError (or FileLockedError) with a one-line message.
    """
    path = os.fspath(path)
    beat("/", "opening the file")
    register_filters()  # compressed images (Blosc2, Zstd, ...) decode once hdf5plugin is loaded
    if mode == "r" and not os.path.exists(path):
        raise FileAccessError("no such file", path)
    if mode == "r" and os.path.isdir(path):
        raise FileAccessError("is a directory, not an HDF5 file", path)
    if os.path.isfile(path):
        try:
            recover_if_abandoned(path)
        except OSError as exc:
            raise FileAccessError(
                f"cannot finish a save a killed demoset writer left ({exc.strerror or exc})", path
            ) from None
    start = time.monotonic()
    deadline = start + max(lock_timeout, 0.0)
    gate_wait = max(lock_timeout, COMMIT_WAIT)
    delay = 0.01
    while True:
        try:
            with reader_gate(
                path,
                start + gate_wait - time.monotonic(),
                waited=f"a demoset writer has been saving a demo for {COMMIT_WAIT:.0f} s; try again",
            ):
                if mode == "r" and swmr:
                    return h5py.File(path, "r", swmr=True, **kwargs)
                return h5py.File(path, mode, **kwargs)
        except (OSError, ValueError) as exc:
            err = translate_open_error(exc, path)
            if isinstance(err, FileLockedError) and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            raise err from None


def check_link_safe(group: h5py.Group, name: str, path: str) -> None:
    """Refuse external links: following them would read (or create) files elsewhere."""
    try:
        link = group.get(name, getlink=True)
    except (KeyError, OSError, RuntimeError, ValueError):
        return
    if isinstance(link, h5py.ExternalLink):
        h5path = f"{group.name.rstrip('/')}/{name}"
        raise UnsafeFileError(
            f"external link to {link.filename!r}:{link.path} refused (points outside the file)",
            path,
            h5path,
        )


def check_dataset_safe(dset: h5py.Dataset, path: str) -> None:
    """Refuse virtual datasets whose sources lie in other files."""
    try:
        virtual = dset.is_virtual
    except (OSError, RuntimeError, ValueError):
        return
    if not virtual:
        return
    for source in dset.virtual_sources():
        if source.file_name not in (".", ""):
            raise UnsafeFileError(
                f"virtual dataset reads from {source.file_name!r}, refused (points outside the file)",
                path,
                dset.name,
            )


# ---------------------------------------------------------------------------- hostile files
MAX_EXPANSION = 1 << 14
"""Largest ratio of an array's declared bytes to the bytes it stores that is read.

Compression legitimately shrinks data (gzip at most about 1000:1); an array declaring a
terabyte while storing nothing (unallocated chunks) or a decompression bomb is refused.
"""
SMALL_ARRAY_BYTES = 1 << 20


def array_nbytes(dset: h5py.Dataset) -> int:
    """Bytes a whole read of `dset` would allocate (0 for an empty dataspace)."""
    if dset.shape is None:
        return 0
    count = 1
    for n in dset.shape:
        count *= int(n)
    return count * int(dset.dtype.itemsize)


def check_dataset_size(dset: h5py.Dataset, path: str, nbytes: int | None = None) -> None:
    """Refuse reading an array that declares far more bytes than the file stores for it."""
    declared = array_nbytes(dset) if nbytes is None else nbytes
    if declared <= SMALL_ARRAY_BYTES:
        return
    try:
        stored = int(dset.id.get_storage_size())
    except READ_ERRORS:
        stored = 0
    if declared > max(stored, 1) * MAX_EXPANSION:
        from demoset.memory import format_bytes

        raise LayoutError(
            f"declares {format_bytes(declared)} but stores {format_bytes(stored)} "
            "(unallocated data or a decompression bomb); refused",
            path,
            dset.name,
        )


def read_array(dset: h5py.Dataset, path: str, selection=(), error=None) -> np.ndarray:
    """Read `dset[selection]` safely: size checks first, one-line errors.

    Refuses arrays that declare much more than they store and reads that would not fit
    in memory (before allocating), and turns h5py's errors into a DemosetError.
    """
    from demoset.memory import ensure_fits

    with h5_errors(path, dset.name, error=error):
        beat(dset.name, "array")
        check_dataset_safe(dset, path)
        if dset.shape is None:
            raise (error or LayoutError)("the array has no data (empty dataspace)", path, dset.name)
        if selection == ():
            nbytes = array_nbytes(dset)
        else:
            nbytes = _selection_nbytes(dset, selection)
        check_dataset_size(dset, path, nbytes)
        ensure_fits(nbytes or 0, f"reading {dset.name}", path)
        try:
            return np.asarray(dset[selection])
        except (OSError, ValueError, RuntimeError) as exc:
            if not filter_ids(dset):
                raise
            first = selection if isinstance(selection, slice) else slice(None)
            a, b, _ = first.indices(int(dset.shape[0]) if dset.shape else 0)
            raise read_failure(dset, path, dset.name, a, b, exc) from None


def _selection_nbytes(dset: h5py.Dataset, selection) -> int:
    """Bytes of a basic slice of `dset` without reading it."""
    sel = selection if isinstance(selection, tuple) else (selection,)
    count = 1
    for axis, n in enumerate(dset.shape):
        item = sel[axis] if axis < len(sel) else slice(None)
        if isinstance(item, slice):
            count *= len(range(*item.indices(int(n))))
        elif isinstance(item, (int, np.integer)):
            continue  # an integer index drops the axis
        else:
            count *= int(n)  # anything else: count the whole axis
    return count * int(dset.dtype.itemsize)
