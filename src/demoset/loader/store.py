"""Where the loader's arrays live: flat in shared RAM, or read from the file per window.

Each array key ("obs/agentview_image", "actions", ...) of the selected demos is one object:

- `RamArray`: all demos back to back in one flat (frames, ...) array held in shared
  memory (a torch shared storage), so DataLoader worker processes map the same pages
  instead of copying them, whether they are forked or spawned. A batch is one numpy
  fancy-index gather.
- `FileArray`: nothing held; each window's frame range is read from the file with one
  read per window, then padded. Uncompressed arrays (HDF5 contiguous layout, or chunks of
  whole frames without filters - what demoset's writer makes) are read with `os.preadv` at
  byte offsets computed once at start-up: this bypasses HDF5 for reading, so it holds no
  HDF5 lock and a follow-mode writer can keep appending. Everything else (compressed
  images) is read through h5py, opening the file per batch in swmr mode.
- `ZeroArray`: a dataset key the demos lack reads as zeros of shape (1,), as robomimic's
  cache does.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import h5py
import numpy as np

from demoset.errors import LayoutError
from demoset.format import open_dataset
from demoset.format.demofile import DemoFile
from demoset.loader.index import Windows

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


def fill_padding(out: np.ndarray, pad_front: np.ndarray, count: np.ndarray) -> None:
    """Repeat edge frames in place: out[b, t] = out[b, clip(t, pad_front, pad_front+count-1)]."""
    batch, length = out.shape[:2]
    t = np.arange(length, dtype=np.int64)[None, :]
    src = np.clip(t, pad_front[:, None], (pad_front + count - 1)[:, None])
    rows, cols = np.nonzero(src != t)
    if rows.size:
        out[rows, cols] = out[rows, src[rows, cols]]


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

    def append(self, source: DemoReader, demos: list[str], lengths: np.ndarray, progress=None) -> None:
        if progress is not None:
            progress(int(np.sum(lengths)))

    def demo_arrays(self, source: DemoReader, demos, lengths, starts):
        for length in lengths:
            yield np.zeros((int(length), 1), dtype=np.float32)


class RamArray:
    """One key of all selected demos, back to back, in shared memory."""

    cached = True

    def __init__(self, key: str, frame_shape: tuple[int, ...], dtype, frames: int):
        self.key = key
        self.frame_shape = tuple(frame_shape)
        self.dtype = np.dtype(dtype)
        self.frames = 0
        self._owner, self._data = shared_array((frames, *self.frame_shape), self.dtype)

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)

    @property
    def data(self) -> np.ndarray:
        """The filled frames, (frames, *frame_shape)."""
        return self._data[: self.frames]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_data")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        capacity = self._owner.numel() // max(self.dtype.itemsize * int(np.prod(self.frame_shape)), 1)
        nbytes = capacity * self.dtype.itemsize * int(np.prod(self.frame_shape))
        self._data = self._owner.numpy()[:nbytes].view(self.dtype).reshape((capacity, *self.frame_shape))

    def load(self, source: DemoReader, demos: list[str], lengths: np.ndarray, progress=None) -> None:
        """Read the key of `demos` from the file into the free frames after `self.frames`."""
        need = self.frames + int(np.sum(lengths))
        if need > self._data.shape[0]:
            self._grow(need)
        pos = self.frames
        for demo, length in zip(demos, lengths):
            length = int(length)
            source.read_into(demo, self.key, self._data[pos : pos + length])
            pos += length
            if progress is not None:
                progress(length)
        self.frames = pos

    append = load

    def _grow(self, frames: int) -> None:
        owner, data = shared_array((frames, *self.frame_shape), self.dtype)
        data[: self.frames] = self._data[: self.frames]
        self._owner, self._data = owner, data

    def gather_windows(self, win: Windows) -> np.ndarray:
        out = self._data.take(win.flat.reshape(-1), axis=0)
        return out.reshape((win.size, win.length, *self.frame_shape))

    def gather_frames(self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray) -> np.ndarray:
        return self._data.take(flat, axis=0)

    def demo_arrays(self, source, demos, lengths, starts):
        for start, length in zip(starts, lengths):
            yield self._data[int(start) : int(start) + int(length)]


class DemoReader:
    """Reads arrays of demos from one file; one h5py handle and one fd per process.

    h5py handles come from `open_dataset`, so they follow the format layer's rules for
    files a writer appends to. In swmr (follow) mode the file is opened for a batch and
    closed after it, so a writer is never locked out; otherwise one handle stays open per
    process. Forked workers notice the new pid and open their own. The raw fd used for
    uncompressed arrays takes no lock at all; it refuses a file that was replaced (another
    inode under the same name) since the dataset was opened, whose byte offsets differ.
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
        self._borrowed = False

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
            self._borrowed = False
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

    @contextmanager
    def session(self):
        """Scope of one batch: in swmr mode the h5py file opened inside is closed at the end."""
        self._check_pid()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0 and self.swmr and not self._borrowed:
                self._close_h5()

    @contextmanager
    def borrow(self, df: DemoFile):
        """Read through an already open DemoFile (set-up and refresh) without closing it after."""
        self._check_pid()
        saved = (self._df, self._datasets, self._borrowed)
        self._df, self._datasets, self._borrowed = df, {}, True
        try:
            yield self
        finally:
            self._df, self._datasets, self._borrowed = saved

    def demofile(self) -> DemoFile:
        self._check_pid()
        if self._df is None:
            self._df = open_dataset(self.path, swmr=self.swmr)
            self._datasets = {}
        return self._df

    def remember(self, demo: str, key: str, dset: h5py.Dataset) -> None:
        self._datasets[f"{demo}/{key}"] = dset

    def dataset(self, demo: str, key: str) -> h5py.Dataset:
        dset = self._datasets.get(f"{demo}/{key}")
        if dset is None:
            dset = self.demofile().dataset(demo, key)
            self._datasets[f"{demo}/{key}"] = dset
        return dset

    def read_into(self, demo: str, key: str, out: np.ndarray, start: int = 0) -> None:
        """Read frames [start, start + len(out)) of data/<demo>/<key> into `out`."""
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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LayoutError(f"cannot read array ({first})", self.path, f"/data/{demo}/{key}") from None

    def _close_h5(self) -> None:
        if self._df is not None and not self._borrowed:
            self._df.close()
        self._df = None
        self._datasets = {}

    def close(self) -> None:
        if self._pid == os.getpid():
            self._close_h5()
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
        self._fd = None
        self._df = None
        self._datasets = {}


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

    def append(self, source: DemoReader, demos: list[str], lengths: np.ndarray, progress=None) -> None:
        parts = [self.offsets]
        starts = [self.starts]
        pos = self.frames
        for demo, length in zip(demos, lengths):
            length = int(length)
            dset = source.dataset(demo, self.key)
            if dset.shape[0] < length:
                raise LayoutError(
                    f"array has {dset.shape[0]} steps, fewer than the demo's {length}",
                    source.path,
                    f"/data/{demo}/{self.key}",
                )
            offs = _frame_offsets(dset, self.frame_bytes)
            if offs is not None and length and not self._bytes_agree(source, dset, demo, offs):
                offs = None
            parts.append(offs[:length] if offs is not None else np.full(length, -1, dtype=np.int64))
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
            follows[1:] = (self.offsets[1:] == self.offsets[:-1] + self.frame_bytes) & (self.offsets[1:] >= 0)
        self.breaks = np.concatenate([[0], np.cumsum(~follows)])

    load = append

    def _bytes_agree(self, source: DemoReader, dset: h5py.Dataset, demo: str, offs: np.ndarray) -> bool:
        """Check the computed offset of the first and last frames against h5py's reading."""
        for i in {0, len(offs) - 1}:
            expected = np.ascontiguousarray(dset[i])
            got = np.empty(self.frame_shape, dtype=self.dtype)
            if self._pread(got, int(offs[i])) != self.frame_bytes:
                return False
            if expected.tobytes() != got.tobytes():
                return False
        return True

    def _pread(self, out: np.ndarray, offset: int) -> int:
        fd = self.reader.fd()
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                break
            done += n
        return done

    def _read(self, out: np.ndarray, demo: np.ndarray, begin: np.ndarray, end: np.ndarray, pad_front: np.ndarray) -> None:
        first = self.starts[demo] + begin
        last = self.starts[demo] + end - 1
        direct = (self.offsets[first] >= 0) & (self.breaks[last + 1] - self.breaks[first + 1] == 0)
        byte_start = self.offsets[first]
        for b in range(len(demo)):
            count = int(end[b] - begin[b])
            dst = out[b, int(pad_front[b]) : int(pad_front[b]) + count]
            if direct[b]:
                if self._pread(dst, int(byte_start[b])) == dst.nbytes:
                    continue
                raise LayoutError(
                    "file ended before the frames (truncated?)",
                    self.reader.path,
                    f"/data/{self.demos[int(demo[b])]}/{self.key}",
                )
            self.reader.read_into(self.demos[int(demo[b])], self.key, dst, int(begin[b]))

    def gather_windows(self, win: Windows) -> np.ndarray:
        out = np.empty((win.size, win.length, *self.frame_shape), dtype=self.dtype)
        with self.reader.session():
            self._read(out, win.demo, win.begin, win.end, win.pad_front)
        fill_padding(out, win.pad_front, win.end - win.begin)
        return out

    def gather_frames(self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray) -> np.ndarray:
        out = np.empty((len(flat), 1, *self.frame_shape), dtype=self.dtype)
        zero = np.zeros(len(flat), dtype=np.int64)
        with self.reader.session():
            self._read(out, demo, step, step + 1, zero)
        return out[:, 0]

    def demo_arrays(self, source: DemoReader, demos, lengths, starts):
        for demo, length in zip(demos, lengths):
            out = np.empty((int(length), *self.frame_shape), dtype=self.dtype)
            source.read_into(demo, self.key, out)
            yield out
