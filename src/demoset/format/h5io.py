"""Opening HDF5 files with errors people can act on, and refusing links out of the file.

h5py's errors are long and cryptic ("unable to lock file, errno = 11"); these helpers turn
them into one-line `DemosetError`s that name the file and say what to do.
"""

from __future__ import annotations

import errno
import os
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from demoset.errors import (
    DemosetError,
    FileAccessError,
    FileLockedError,
    LayoutError,
    UnsafeFileError,
)
from demoset.format.compression import filter_ids, read_failure, register_filters
from demoset.format.isolation import beat, in_isolated_child
from demoset.format.journal import Turnstile, recover_if_abandoned

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


COMMIT_WAIT = 30.0
"""Seconds a reader waits for a demoset writer's commit (milliseconds, usually) to end."""


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
    gate_deadline = start + max(lock_timeout, COMMIT_WAIT)
    delay = 0.01
    while True:
        gate = _pass_commit_gate(path)
        if gate is False:
            if time.monotonic() < gate_deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            raise FileLockedError(
                f"a demoset writer has been saving a demo for {COMMIT_WAIT:.0f} s; try again", path
            )
        try:
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
        finally:
            if gate not in (True, False, None):
                gate.release()
                gate.close()


def _pass_commit_gate(path: str):
    """The commit gate held shared (a Turnstile), False while a commit runs, None if n/a."""
    if not os.path.isfile(path):
        return None
    try:
        gate = Turnstile(path)
        entered = gate.enter()
    except OSError:
        return None  # no lock directory: fall back to HDF5's own lock
    if not entered:
        gate.close()
        return False
    return gate


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


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same file on disk."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def is_enospc(exc: BaseException) -> bool:
    text = str(exc)
    return (
        getattr(exc, "errno", None) == errno.ENOSPC
        or "No space left" in text
        or "errno = 28" in text
    )


# ---------------------------------------------------------------------------- hostile files
READ_ERRORS = (
    OSError,
    RuntimeError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    OverflowError,
    UnicodeError,
    RecursionError,
    SystemError,
)
"""What h5py (and numpy on what it returns) raise on damaged or hostile content."""

MAX_EXPANSION = 1 << 14
"""Largest ratio of an array's declared bytes to the bytes it stores that is read.

Compression legitimately shrinks data (gzip at most about 1000:1); an array declaring a
terabyte while storing nothing (unallocated chunks) or a decompression bomb is refused.
"""
SMALL_ARRAY_BYTES = 1 << 20


def describe_error(exc: BaseException) -> str:
    """The first line of an exception, short, for a one-line message."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def raised_by_file(exc: BaseException) -> bool:
    """True for an error the file's content caused: an OSError, or one raised inside h5py.

    A KeyError or TypeError from h5py means a broken link, a bad name or a bad type in
    the file; the same error raised by demoset's own code is a bug and is left alone.
    """
    if isinstance(exc, OSError):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("h5py"):
            return True
        tb = tb.tb_next
    return False


@contextmanager
def h5_errors(path, h5path: str | None = None, error=None, what: str = "cannot read"):
    """Turn what h5py raises on a damaged file into one DemosetError naming the file."""
    try:
        yield
    except DemosetError:
        raise
    except READ_ERRORS as exc:
        if not raised_by_file(exc):
            raise
        cls = error or LayoutError
        raise cls(f"{what} ({describe_error(exc)})", path, h5path) from exc


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


def untrusted_input(error=None, path_arg: int = 0):
    """Decorator for entry points that read a file given by the user (converters).

    Whatever h5py raises on a damaged file (an HDF5 error, a KeyError from a broken link)
    comes out as `error` (default LayoutError) naming the file given as positional
    argument `path_arg`; DemosetErrors pass through unchanged.
    """

    def decorate(fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            path = args[path_arg] if len(args) > path_arg else None
            with h5_errors(os.fspath(path) if path is not None else None, error=error):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def guarded_method(method):
    """Decorator for methods of objects with a `.path` that read an untrusted file.

    Whatever h5py raises on damaged content comes out as a LayoutError naming the file.
    """
    import functools

    where = f"{method.__qualname__}"

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if in_isolated_child():  # say where we are (the outermost call), for a stall report
            return _beating_call(where, wrapped, self, args, kwargs)
        return wrapped(self, *args, **kwargs)

    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DemosetError:
            raise
        except READ_ERRORS as exc:
            if not raised_by_file(exc):
                raise
            raise LayoutError(
                f"cannot read ({describe_error(exc)})", getattr(self, "path", None)
            ) from exc

    return wrapper


_guarded_depth = 0


def _beating_call(where: str, fn, self, args, kwargs):
    global _guarded_depth
    if _guarded_depth == 0:
        beat(None, f"{where}({args[0]!r})" if args and isinstance(args[0], str) else where)
    _guarded_depth += 1
    try:
        return fn(self, *args, **kwargs)
    finally:
        _guarded_depth -= 1
