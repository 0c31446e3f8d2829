"""Reading one demo file: an fd for byte reads, HDF5 sessions for everything else.

Uncompressed arrays (HDF5 contiguous layout, or chunks of whole frames without filters,
which is what demoset's writer makes) are read with `os.preadv` at byte offsets worked out
once when the demo is indexed and checked against h5py (`byte_offsets`). A committed demo's
bytes never move (writers only append), so these reads need no HDF5 handle and no lock: a
follow-mode writer can keep committing while they run. Everything that walks HDF5's own
structures (listing demos, resolving datasets, reading compressed arrays through h5py)
happens in a `DemoReader.session()`, which in swmr (follow) mode opens the file through
`open_locked` and closes it again at the end, so a writer's commit never changes that
structure mid-read.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager

import h5py
import numpy as np

from demoset.errors import LayoutError, UnsafeFileError
from demoset.format import (
    DemoFile,
    check_dataset_safe,
    check_dataset_size,
    open_dataset,
    read_failure,
    reader_gate,
)

LOCK_TIMEOUT = 30.0
"""Seconds to wait for a demoset writer's commit to finish before giving up."""

REPLACED = (
    "the file was replaced (another file now has its name) since the dataset was opened; "
    "open it as a new dataset"
)


def file_identity(path: str) -> tuple[int, int]:
    """(device, inode) of a file: stays the same while the file is appended to in place."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def small_metadata_cache(h5: h5py.File, size: int = 1 << 20) -> None:
    """Cap HDF5's metadata cache of a handle we opened (default: grows to 32 MB).

    The loader reads each demo's metadata once; a bigger cache only leaves memory behind
    (about 10 MB for 200 demos, kept by the process after the file is closed).
    """
    try:
        config = h5.id.get_mdc_config()
        config.set_initial_size = True
        config.initial_size = size // 4
        config.min_size = size // 4
        config.max_size = size
        h5.id.set_mdc_config(config)
    except (AttributeError, ValueError, RuntimeError, OSError):  # pragma: no cover - best effort
        pass


def open_locked(path: str, fd: int, swmr: bool, timeout: float = LOCK_TIMEOUT) -> DemoFile:
    """open_dataset(path) with a shared flock held on `fd` until `fd` is unlocked.

    A demoset writer's commit takes that flock exclusively while it copies its journal
    into place, so HDF5's structure cannot change while the lock is held. The reader gate
    of the format layer is held (shared) only while the lock is taken and the file opened:
    a committer that has closed the gate makes new readers wait instead of being starved
    by them, and cannot close it while we are half-way through opening.
    """
    with reader_gate(
        path,
        timeout,
        hold_fd=fd,
        waited=f"a demoset writer has been committing for {timeout:.0f} s",
    ):
        return open_dataset(path, swmr=swmr)


class DemoReader:
    """Reads arrays of one file: a raw fd for byte reads, DemoFile sessions for the rest.

    One fd per process (forked workers notice the new pid and open their own); it refuses
    a file that was replaced (another inode under the same name) since the dataset was
    opened, whose byte offsets would differ. Outside swmr mode a session keeps one
    DemoFile open per process until `close()`; in swmr mode each session opens and closes
    its own (see the module docstring).
    """

    def __init__(self, path: str, swmr: bool, identity: tuple[int, int] | None = None):
        self.path = path
        self.swmr = swmr
        self.identity = identity if identity is not None else file_identity(path)
        self._pid: int | None = None
        self._fd: int | None = None
        self._df: DemoFile | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._depth = 0
        self._locked = False
        self._lock = threading.RLock()
        """Sessions may be entered from the batch's threads (image keys side by side)."""

    def __getstate__(self):
        return {"path": self.path, "swmr": self.swmr, "identity": self.identity}

    def __setstate__(self, state):
        self.__init__(state["path"], state["swmr"], tuple(state["identity"]))

    def _check_pid(self) -> None:
        pid = os.getpid()
        if self._pid != pid:
            # handles inherited from another process must not be used (nor closed) here
            self._fd = None
            self._df = None
            self._datasets = {}
            self._depth = 0
            self._locked = False
            self._lock = threading.RLock()  # a lock held in the parent stays held here
            self._pid = pid

    def check_identity(self) -> None:
        """Raise LayoutError when the path now names another file than the one indexed."""
        try:
            now = file_identity(self.path)
        except OSError as exc:
            raise LayoutError(f"cannot open for reading ({exc.strerror})", self.path) from None
        if now != self.identity:
            raise LayoutError(REPLACED, self.path)

    def fd(self) -> int:
        self._check_pid()
        if self._fd is None:
            with self._lock:
                return self._open_fd()
        return self._fd

    def _open_fd(self) -> int:
        if self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError as exc:
                raise LayoutError(f"cannot open for reading ({exc.strerror})", self.path) from None
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self.identity:
                os.close(fd)
                raise LayoutError(REPLACED, self.path)
            self._fd = fd
        return self._fd

    def pread(self, out: np.ndarray, offset: int) -> int:
        """Read len(out) bytes at `offset` into the contiguous array `out`; returns bytes read."""
        fd = self.fd()
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                break
            done += n
        return done

    @contextmanager
    def session(self):
        """Scope in which `demofile()` may be used (nested sessions share one)."""
        self._check_pid()
        with self._lock:
            self._depth += 1
        try:
            yield self
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self.swmr:
                    self._close_df()

    def demofile(self) -> DemoFile:
        """The open DemoFile of this session (opened, and in swmr mode locked, on first use)."""
        self._check_pid()
        if self._df is not None:
            return self._df
        with self._lock:
            return self._open_df()

    def _open_df(self) -> DemoFile:
        if self._df is None:
            if self.swmr and self._depth == 0:
                raise RuntimeError("DemoReader.demofile() outside a session")  # pragma: no cover
            self.check_identity()
            if self.swmr:
                self._df = open_locked(self.path, self.fd(), swmr=True)
                self._locked = True
            else:
                self._df = open_dataset(self.path)
            small_metadata_cache(self._df.h5)
            self._datasets = {}
        return self._df

    def forget(self) -> None:
        """Drop the datasets resolved so far (HDF5 holds memory for each open one)."""
        self._datasets = {}

    def remember(self, demo: str, key: str, dset: h5py.Dataset) -> None:
        """Keep a dataset already resolved in this session for later lookups."""
        self._datasets[f"{demo}/{key}"] = dset

    def dataset(self, demo: str, key: str) -> h5py.Dataset:
        dset = self._datasets.get(f"{demo}/{key}")
        if dset is None:
            dset = self.demofile().dataset(demo, key)
            self._datasets[f"{demo}/{key}"] = dset
        return dset

    def read_into(self, demo: str, key: str, out: np.ndarray, start: int = 0) -> None:
        """Read frames [start, start + len(out)) of data/<demo>/<key> into `out` through h5py."""
        dset = self.dataset(demo, key)
        stop = start + out.shape[0]
        if dset.shape[0] < stop:
            raise LayoutError(
                f"array has {dset.shape[0]} steps, fewer than the demo's {stop}",
                self.path,
                f"/data/{demo}/{key}",
            )
        try:
            if dset.dtype == out.dtype and out.flags.c_contiguous:
                if out.shape[0]:
                    dset.read_direct(out, np.s_[start:stop], np.s_[:])
            else:
                out[...] = dset[start:stop].astype(out.dtype, copy=False).reshape(out.shape)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise read_failure(dset, self.path, f"/data/{demo}/{key}", start, stop, exc) from None

    def _release_lock(self) -> None:
        if self._locked and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._locked = False

    def _close_df(self) -> None:
        if self._df is not None:
            self._df.close()
        self._df = None
        self._datasets = {}
        self._release_lock()

    def close(self) -> None:
        """Close the DemoFile and the fd (of this process; inherited ones are left alone)."""
        if self._pid == os.getpid():
            self._close_df()
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
        self._fd = None
        self._df = None
        self._datasets = {}
        self._locked = False


def _frame_offsets(dset: h5py.Dataset, frame_bytes: int) -> np.ndarray | None:
    """Byte offset of every frame of an uncompressed dataset, or None when not plain bytes."""
    n = int(dset.shape[0])
    dtype = dset.dtype
    if not dtype.isnative or dtype.kind not in "biuf" or dtype.hasobject:
        return None
    try:
        dcpl = dset.id.get_create_plist()
        if dcpl.get_nfilters() != 0 or dcpl.get_external_count() != 0 or dset.is_virtual:
            return None
        if dcpl.get_layout() == h5py.h5d.CONTIGUOUS:
            base = dset.id.get_offset()
            if base is None:
                return None
            return int(base) + np.arange(n, dtype=np.int64) * frame_bytes
        if dcpl.get_layout() != h5py.h5d.CHUNKED:
            return None
        chunks = dset.chunks
        if chunks is None or tuple(chunks[1:]) != tuple(dset.shape[1:]):
            return None
        per_chunk = int(chunks[0])
        nchunks = -(-n // per_chunk)
        chunk_off = np.full(nchunks, -1, dtype=np.int64)

        def visit(info) -> None:
            i = info.chunk_offset[0] // per_chunk
            if i < nchunks and info.filter_mask == 0:
                chunk_off[i] = info.byte_offset

        try:
            dset.id.chunk_iter(visit)
        except AttributeError:  # pragma: no cover - HDF5 without H5Dchunk_iter
            for i in range(dset.id.get_num_chunks()):
                visit(dset.id.get_chunk_info(i))
        if np.any(chunk_off < 0):
            return None
        frames = np.arange(n, dtype=np.int64)
        return chunk_off[frames // per_chunk] + (frames % per_chunk) * frame_bytes
    except (OSError, RuntimeError, ValueError, KeyError):
        return None


def _child(group: h5py.Group, name: str, path: str):
    """group[name] or None when absent; external links are refused (they leave the file)."""
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise UnsafeFileError(
            f"external link to {link.filename!r}:{link.path} refused (points outside the file)",
            path,
            f"{group.name.rstrip('/')}/{name}",
        )
    return group[name]


def resolve_arrays(df: DemoFile, demo: str, keys) -> dict[str, h5py.Dataset | None]:
    """The datasets data/<demo>/<key> of `keys` (None where absent), each looked up once.

    The same safety rules as DemoFile.dataset: links and virtual datasets pointing out of
    the file are refused.
    """
    groups: dict[str, h5py.Group | None] = {"": df.group(demo)}
    out: dict[str, h5py.Dataset | None] = {}
    for key in keys:
        parent, _, name = key.rpartition("/")
        if parent not in groups:
            node = groups[""]
            for part in parent.split("/"):
                node = _child(node, part, df.path) if isinstance(node, h5py.Group) else None
            groups[parent] = node if isinstance(node, h5py.Group) else None
        group = groups[parent]
        obj = _child(group, name, df.path) if group is not None else None
        if obj is not None and not isinstance(obj, h5py.Dataset):
            raise LayoutError(f"{key!r} is not a dataset", df.path, obj.name)
        if obj is not None:
            check_dataset_safe(obj, df.path)
            if obj.shape is None or obj.ndim == 0:  # no time axis (or no data at all)
                raise LayoutError(f"{key!r} has no time axis", df.path, obj.name)
            check_dataset_size(obj, df.path)  # declares far more than the file stores
        out[key] = obj
    return out


def byte_offsets(
    reader: DemoReader, demo: str, key: str, frame_shape, dtype, length: int, verify: bool
):
    """Per-frame byte offsets of data/<demo>/<key> (None: read it through h5py).

    With `verify`, the first and last frames read by offset must equal h5py's reading.
    """
    dset = reader.dataset(demo, key)
    frame_bytes = int(np.prod(frame_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    offs = _frame_offsets(dset, frame_bytes)
    if offs is None or length == 0:
        return offs
    offs = offs[:length]
    if verify:
        for i in {0, length - 1}:
            expected = np.ascontiguousarray(dset[i])
            got = np.empty(expected.shape, dtype=expected.dtype)
            if reader.pread(got, int(offs[i])) != got.nbytes or got.tobytes() != expected.tobytes():
                return None
    return offs


def read_by_offsets(reader: DemoReader, out: np.ndarray, offsets: np.ndarray, where: str) -> None:
    """Fill `out` (frames, ...) from per-frame byte offsets, one read per run of adjacent frames."""
    n = len(offsets)
    if n == 0:
        return
    frame_bytes = out.nbytes // n
    starts = np.flatnonzero(np.diff(offsets) != frame_bytes) + 1
    bounds = [0, *starts.tolist(), n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = out[a:b]
        if reader.pread(part, int(offsets[a])) != part.nbytes:
            raise LayoutError("file ended before the frames (truncated?)", reader.path, where)
