"""Where the loader's arrays live: flat in shared RAM, or read from the file per window.

Each array key ("obs/agentview_image", "actions", ...) of the selected demos is one object:

- `RamArray`: all demos back to back in one flat (frames, ...) array held in shared
  memory (a torch shared storage), so DataLoader worker processes map the same pages
  instead of copying them, whether they are forked or spawned. A batch is one gather
  per key (`RamArray.take_into`).
- `FileArray`: nothing held; each window's frame range is read from the file with one
  read per window, then padded.
- `ZeroArray`: a dataset key the demos lack reads as zeros of shape (1,), as robomimic's
  cache does.

Reading the file. Uncompressed arrays (HDF5 contiguous layout, or chunks of whole frames
without filters, which is what demoset's writer makes) are read with `os.preadv` at byte
offsets worked out once when the demo is indexed and checked against h5py. A committed
demo's bytes never move (writers only append), so these reads need no HDF5 handle and no
lock: a follow-mode writer can keep committing while they run. Everything that walks
HDF5's own structures (listing demos, resolving datasets, reading compressed arrays
through h5py) happens in a `DemoReader.session()`, which in swmr (follow) mode opens the
file through `open_dataset` while holding the format layer's reader gate and a shared
lock on the file (see `open_locked`), so a writer's commit never changes that structure
mid-read, and closes it again at the end.
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import h5py
import numpy as np

from demoset.errors import FileLockedError, LayoutError, UnsafeFileError
from demoset.format import open_dataset
from demoset.format.compression import read_failure
from demoset.format.demofile import DemoFile
from demoset.format.h5io import check_dataset_safe, check_dataset_size
from demoset.loader.batch import torch_dtype
from demoset.loader.buffers import batch_buffers
from demoset.loader.copying import split_rows, torch_take
from demoset.loader.index import Windows

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


def shared_array(shape: tuple[int, ...], dtype) -> tuple[object, np.ndarray]:
    """A zero-copy numpy view of a new torch shared-memory storage: (owner tensor, array)."""
    import torch

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = max(nbytes, 1)
    try:
        storage = torch.UntypedStorage._new_shared(size)
        owner = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (size,), (1,))
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        owner = torch.empty(size, dtype=torch.uint8).share_memory_()
    array = owner.numpy()[:nbytes].view(dtype).reshape(shape)
    return owner, array


SHARED_OUTPUT_MIN_BYTES = 1 << 16
"""Batch arrays at least this big are built in shared memory inside DataLoader workers."""

_outputs = threading.local()


@contextmanager
def shared_outputs(registry: dict | None):
    """Within this block, big batch arrays are allocated in shared memory and registered.

    A DataLoader worker sends its batch to the main process through shared memory; an
    array that already lives there goes by handle instead of being copied, and the worker
    keeps no heap copy of it. `registry` maps id(array) -> (array, owner tensor); None
    turns this off (the main process).
    """
    saved = getattr(_outputs, "registry", None)
    _outputs.registry = registry
    try:
        yield
    finally:
        _outputs.registry = saved


def new_batch_array(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A reused block (see `buffers`), or a registered shared-memory array inside `shared_outputs`."""
    registry = getattr(_outputs, "registry", None)
    dtype = np.dtype(dtype)
    if registry is None:
        return batch_buffers.empty(tuple(shape), dtype)
    if math.prod(shape) * dtype.itemsize < SHARED_OUTPUT_MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    owner, array = shared_array(tuple(shape), dtype)
    registry[id(array)] = (array, owner)
    return array


def fill_padding(out: np.ndarray, win: Windows) -> None:
    """Repeat edge frames in place where a window runs past its demo (see
    `Windows.padded_windows`). One or two broadcast copies per padded window: about 1 in
    16 windows, and half the time of one fancy-indexed copy of every padded position."""
    length = out.shape[1]
    for b, front, stop in win.padded_windows:
        if front:
            out[b, :front] = out[b, front]
        if stop < length:
            out[b, stop:] = out[b, stop - 1]


def _wait(what, deadline: float, path: str, message: str) -> None:
    delay = 0.005
    while not what():
        if time.monotonic() > deadline:
            raise FileLockedError(message, path)
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _loaded_library(name: str) -> str | None:
    """Path of a shared library this process has loaded (from /proc/self/maps), if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith(name + "-") or os.path.basename(
                    path
                ).startswith(name + ".so"):
                    return path
    except OSError:
        pass
    return None


def release_free_heap() -> None:
    """Give memory freed while loading back to the OS (best effort, Linux only).

    Loading touches thousands of HDF5 objects. Once closed, HDF5 keeps their memory in
    its free lists and glibc keeps freed pages in the heap, so the process would stay
    several MB (about 6 MB per 200 demos) above its live data. A garbage collection first
    frees handles held in reference cycles. H5garbage_collect() empties
    the free lists (under h5py's lock, as every HDF5 call) and malloc_trim() returns the
    pages.
    """
    import ctypes
    import gc

    gc.collect()  # closed HDF5 handles caught in reference cycles go first
    path = _loaded_library("libhdf5")
    if path is not None:
        try:
            from h5py._objects import phil

            with phil:
                ctypes.CDLL(path).H5garbage_collect()
        except (OSError, AttributeError, ImportError):
            pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


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


def _take_shared(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def open_locked(path: str, fd: int, swmr: bool, timeout: float = LOCK_TIMEOUT) -> DemoFile:
    """open_dataset(path) with a shared flock held on `fd` until `fd` is unlocked.

    A demoset writer's commit takes that flock exclusively while it copies its journal
    into place, so HDF5's structure cannot change while the lock is held. The reader gate
    of the format layer is held (shared) only while the lock is taken and the file opened:
    a committer that has closed the gate makes new readers wait instead of being starved
    by them, and cannot close it while we are half-way through opening.
    """
    from demoset.format.journal import Turnstile

    deadline = time.monotonic() + timeout
    try:
        gate = Turnstile(path)
    except OSError:  # no lock directory: the flock alone still keeps commits out
        gate = None
    try:
        if gate is not None:
            _wait(
                gate.enter,
                deadline,
                path,
                f"a demoset writer has been committing for {timeout:.0f} s",
            )
        _wait(
            lambda: _take_shared(fd),
            deadline,
            path,
            f"another program has held the file for writing for {timeout:.0f} s",
        )
        try:
            return open_dataset(path, swmr=swmr)
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise
    finally:
        if gate is not None:
            gate.release()
            gate.close()


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
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0 and self.swmr:
                self._close_df()

    def demofile(self) -> DemoFile:
        """The open DemoFile of this session (opened, and in swmr mode locked, on first use)."""
        self._check_pid()
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


class ZeroArray:
    """A dataset key missing from the demos: zeros of shape (1,) per step (float32)."""

    cached = True
    frame_shape = (1,)
    dtype = np.dtype(np.float32)
    nbytes = 0

    def gather_windows(self, win: Windows) -> np.ndarray:
        return np.zeros((win.size, win.length, 1), dtype=np.float32)

    def gather_frames(self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray) -> np.ndarray:
        return np.zeros((len(flat), 1), dtype=np.float32)

    def append(self, reader: DemoReader, demos: list[str], lengths: np.ndarray, progress=None):
        if progress is not None:
            progress(int(np.sum(lengths)))
        return None

    def demo_arrays(self, reader: DemoReader, demos, lengths, starts):
        for length in lengths:
            yield np.zeros((int(length), 1), dtype=np.float32)

    def truncate(self, frames: int, count: int) -> None:
        pass

    def reserve(self, frames: int, demos: int = 0) -> None:
        pass


class RamArray:
    """One key of all selected demos, back to back, in shared memory."""

    cached = True

    def __init__(self, key: str, frame_shape: tuple[int, ...], dtype, stored_dtype=None):
        self.key = key
        self.frame_shape = tuple(frame_shape)
        self.dtype = np.dtype(dtype)
        self.stored_dtype = np.dtype(stored_dtype if stored_dtype is not None else dtype)
        self.frames = 0
        self._owner, self._data = shared_array((0, *self.frame_shape), self.dtype)

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)

    @property
    def data(self) -> np.ndarray:
        """The filled frames, (frames, *frame_shape)."""
        return self._data[: self.frames]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_shape"] = self._data.shape
        state.pop("_data")
        state.pop("_kept_rows", None)
        return state

    def __setstate__(self, state):
        shape = state.pop("_shape")
        self.__dict__.update(state)
        nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        self._data = self._owner.numpy()[:nbytes].view(self.dtype).reshape(shape)

    def append(self, reader: DemoReader, demos: list[str], lengths: np.ndarray, progress=None):
        """Make room for `demos` and read them; returns a function finishing the byte reads.

        Called inside a reader session: demos that need h5py are read now, the others
        are left to the returned function, which needs no session (no lock held).
        """
        need = self.frames + int(np.sum(lengths))
        if need > self._data.shape[0]:
            self._grow(need)
        pending = []
        pos = self.frames
        for i, (demo, length) in enumerate(zip(demos, lengths)):
            length = int(length)
            dst = self._data[pos : pos + length]
            offs = byte_offsets(
                reader, demo, self.key, self.frame_shape, self.stored_dtype, length, verify=i == 0
            )
            if offs is None:
                reader.read_into(demo, self.key, dst)
                if progress is not None:
                    progress(length)
            else:
                pending.append((demo, dst, offs))
            pos += length
        self.frames = pos

        def finish() -> None:
            for demo, dst, offs in pending:
                where = f"/data/{demo}/{self.key}"
                if self.stored_dtype == self.dtype:
                    read_by_offsets(reader, dst, offs, where)
                else:
                    raw = np.empty(dst.shape, dtype=self.stored_dtype)
                    read_by_offsets(reader, raw, offs, where)
                    dst[...] = raw
                if progress is not None:
                    progress(len(dst))

        return finish

    def truncate(self, frames: int, count: int) -> None:
        self.frames = min(self.frames, frames)

    def reserve(self, frames: int, demos: int = 0) -> None:
        """Make room for `frames` frames in all (one allocation for a whole load)."""
        if frames > self._data.shape[0]:
            self._grow(frames)

    def extend(self, frames: np.ndarray) -> None:
        """Add `frames` (n, *frame_shape) after the held ones."""
        need = self.frames + len(frames)
        if need > self._data.shape[0]:
            self._grow(need)
        self._data[self.frames : need] = frames
        self.frames = need

    def _grow(self, frames: int) -> None:
        capacity = max(frames, self.frames + self.frames // 4) if self.frames else frames
        owner, data = shared_array((capacity, *self.frame_shape), self.dtype)
        data[: self.frames] = self._data[: self.frames]
        self._owner, self._data = owner, data

    def gather_windows(self, win: Windows) -> np.ndarray:
        out = new_batch_array((win.size, win.length, *self.frame_shape), self.dtype)
        self.take_into(win.flat_frames, out.reshape((-1, *self.frame_shape)))
        return out

    def gather_frames(self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray) -> np.ndarray:
        out = new_batch_array((len(flat), *self.frame_shape), self.dtype)
        self.take_into(flat, out)
        return out

    def take_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        """out[i] = data[rows[i]]; big gathers are split over threads (see `copying`)."""
        if torch_take(self._data, rows, out, self._rows_tensor):
            return

        def part(a: int, b: int) -> None:
            # indices are in range: mode="clip" writes straight into `out` (no buffering)
            self._data.take(rows[a:b], axis=0, out=out[a:b], mode="clip")

        split_rows(len(rows), out.nbytes, part)

    def _rows_tensor(self):
        """The held frames as one 2-D tensor of rows (kept until the array grows)."""
        kept = self.__dict__.get("_kept_rows")
        if kept is None or kept[0] is not self._data:
            width = self._data[:1].size or 1
            rows = self._owner[: self._data.nbytes].view(torch_dtype(self.dtype))
            kept = self._kept_rows = (self._data, rows.view(len(self._data), width))
        return kept[1]

    def demo_arrays(self, reader, demos, lengths, starts):
        for start, length in zip(starts, lengths):
            yield self._data[int(start) : int(start) + int(length)]


class FileArray:
    """One key read from the file per window: no RAM held beyond the byte offsets."""

    cached = False

    def __init__(self, key: str, frame_shape: tuple[int, ...], dtype, reader: DemoReader):
        self.key = key
        self.frame_shape = tuple(frame_shape)
        self.dtype = np.dtype(dtype)
        self.frame_bytes = int(np.prod(self.frame_shape, dtype=np.int64)) * self.dtype.itemsize
        self.reader = reader
        self.demos: list[str] = []
        self.offsets = np.zeros(0, dtype=np.int64)
        """Byte offset of every flat frame, -1 where the frame must be read through h5py."""
        self.breaks = np.zeros(1, dtype=np.int64)
        """breaks[i + 1] - breaks[j + 1]: how many of frames j+1..i do not follow their predecessor."""
        self.starts = np.zeros(0, dtype=np.int64)
        self.frames = 0
        self.nbytes = 0

    def append(self, reader: DemoReader, demos: list[str], lengths: np.ndarray, progress=None):
        """Index the byte offsets of `demos` (inside a reader session); nothing to finish."""
        parts = [self.offsets]
        starts = [self.starts]
        pos = self.frames
        for i, (demo, length) in enumerate(zip(demos, lengths)):
            length = int(length)
            offs = byte_offsets(
                reader, demo, self.key, self.frame_shape, self.dtype, length, verify=i == 0
            )
            parts.append(offs if offs is not None else np.full(length, -1, dtype=np.int64))
            starts.append(np.array([pos], dtype=np.int64))
            pos += length
            if progress is not None:
                progress(length)
        self.demos = self.demos + list(demos)
        self.offsets = np.concatenate(parts)
        self.starts = np.concatenate(starts)
        self.frames = pos
        follows = np.zeros(len(self.offsets), dtype=bool)
        if len(self.offsets) > 1:
            follows[1:] = (self.offsets[1:] == self.offsets[:-1] + self.frame_bytes) & (
                self.offsets[1:] >= 0
            )
        self.breaks = np.concatenate([[0], np.cumsum(~follows)])
        return None

    def reserve(self, frames: int, demos: int = 0) -> None:
        pass

    def truncate(self, frames: int, count: int) -> None:
        self.demos = self.demos[:count]
        self.offsets = self.offsets[:frames]
        self.starts = self.starts[:count]
        self.breaks = self.breaks[: frames + 1]
        self.frames = min(self.frames, frames)

    def _read(
        self,
        out: np.ndarray,
        demo: np.ndarray,
        begin: np.ndarray,
        end: np.ndarray,
        pad_front: np.ndarray,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Windows [begin, end) of demos `demo` into `out` (C-contiguous, made by the caller),
        each at its window's row from frame pad_front on; then `then()`.

        Windows stored uncompressed are read by the copy threads (see `copying`), the
        others through h5py in the calling thread."""
        first = self.starts[demo] + begin
        last = self.starts[demo] + end - 1
        stored = self.offsets[first] >= 0
        one_run = stored & (self.breaks[last + 1] - self.breaks[first + 1] == 0)
        reader = self.reader
        fd = reader.fd()
        window_bytes = out.nbytes // len(demo) if len(demo) else 0
        flat = memoryview(out.reshape(-1).view(np.uint8))
        starts = ((np.arange(len(demo)) * window_bytes) + pad_front * self.frame_bytes).tolist()
        sizes = ((end - begin) * self.frame_bytes).tolist()
        offsets = self.offsets[first].tolist()
        is_direct = one_run.tolist()
        fast = np.flatnonzero(stored).tolist()
        slow = np.flatnonzero(~stored).tolist()

        def where(b: int) -> str:
            return f"/data/{self.demos[int(demo[b])]}/{self.key}"

        def window(b: int) -> np.ndarray:
            return out[b, int(pad_front[b]) : int(pad_front[b]) + int(end[b] - begin[b])]

        def read_part(a: int, b: int) -> None:
            """Windows fast[a:b] into their places: one preadv each when one run of bytes."""
            for i in fast[a:b]:
                size = sizes[i]
                if is_direct[i]:
                    if os.preadv(fd, [flat[starts[i] : starts[i] + size]], offsets[i]) == size:
                        continue  # the usual case
                    if reader.pread(window(i), offsets[i]) != size:
                        raise LayoutError(
                            "file ended before the frames (truncated?)", reader.path, where(i)
                        )
                else:  # uncompressed, but not one run of bytes (chunks apart in the file)
                    run = self.offsets[first[i] : last[i] + 1]
                    read_by_offsets(reader, window(i), run, where(i))

        def finish(_) -> None:
            if slow:  # compressed: each chunk decoded once for the batch (loader/chunks.py)
                with reader.session():
                    self._chunk_windows().read(
                        [self.demos[int(demo[b])] for b in slow],
                        [int(begin[b]) for b in slow],
                        [window(b) for b in slow],
                    )
            if then is not None:
                then()

        split_rows(len(fast), sum(sizes[i] for i in fast), read_part, finish)

    def _chunk_windows(self):
        from demoset.loader.chunks import ChunkWindows

        chunks = self.__dict__.get("_chunks")
        if chunks is None or chunks.reader is not self.reader:
            chunks = self._chunks = ChunkWindows(self.reader, self.key)
        return chunks

    def gather_windows(self, win: Windows) -> np.ndarray:
        out = new_batch_array((win.size, win.length, *self.frame_shape), self.dtype)
        with self.reader.session():
            self._read(
                out, win.demo, win.begin, win.end, win.pad_front, lambda: fill_padding(out, win)
            )
        return out

    def gather_frames(self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray) -> np.ndarray:
        out = np.empty((len(flat), 1, *self.frame_shape), dtype=self.dtype)
        zero = np.zeros(len(flat), dtype=np.int64)
        with self.reader.session():
            self._read(out, demo, step, step + 1, zero)
        return out[:, 0]

    def demo_arrays(self, reader: DemoReader, demos, lengths, starts):
        for i, (demo, length) in enumerate(zip(demos, lengths)):
            out = np.empty((int(length), *self.frame_shape), dtype=self.dtype)
            s = int(self.starts[i])
            if length and self.offsets[s] >= 0:
                read_by_offsets(
                    reader, out, self.offsets[s : s + int(length)], f"/data/{demo}/{self.key}"
                )
            else:
                reader.read_into(demo, self.key, out)
            yield out
