"""The array kinds: where one key of the selected demos lives, and how a batch reads it.

Each array key ("obs/agentview_image", "actions", ...) of the selected demos is served by
one object of a kind that follows `ArrayKind` (what a batch reads) and is filled by one
that follows `Storage` (what loading fills); most kinds are both:

- `RamArray`: all demos back to back in one flat (frames, ...) array held in shared
  memory (a torch shared storage), so DataLoader worker processes map the same pages
  instead of copying them, whether they are forked or spawned. A batch is one gather
  per key (`RamArray.take_into`).
- `FileArray`: nothing held; each window's frame range is read from the file with one
  read per window (`reader.py`), then padded.
- `ZeroArray`: a dataset key the demos lack reads as zeros of shape (1,), as robomimic's
  cache does.
- `pack.RamPack` (storage) with its `PackColumn`s (kinds): small cached keys side by side.
- `shifted.ShiftedPair` (storage) with its `PairSide`s (kinds): an image key's obs and
  next_obs held once.
- `ram_chunks.RamChunks` (both), and `chunk_pair.ChunkPair` (storage) with its obs
  `RamChunks` and `NextSide` (kinds): compressed image chunks held in shared RAM and
  decoded per batch (cache "all" with `cache_compressed`).

`FileArray` and the chunk kinds read windows into a block the caller made
(`read_windows`); `WindowReads` gives them the batch reads built on that.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np

from demoset.errors import LayoutError
from demoset.loader.alloc import BatchPlan, shared_array
from demoset.loader.chunks import ChunkWindows
from demoset.loader.index import Windows
from demoset.loader.reader import DemoReader, byte_offsets, read_by_offsets


class ArrayKind(Protocol):
    """What a batch reads from one key (the protocol every array kind follows)."""

    frame_shape: tuple[int, ...]
    dtype: np.dtype
    cached: bool
    """True when the frames are held in RAM (no file read per batch)."""

    def gather_windows(self, plan: BatchPlan) -> np.ndarray:
        """The batch's windows, (B, T, *frame_shape), padding included."""
        ...

    def gather_frames(
        self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray, plan: BatchPlan
    ) -> np.ndarray:
        """Single frames (goals): flat frame numbers, with their demos and steps, (n, ...)."""
        ...

    def demo_arrays(
        self, reader: DemoReader, demos: list[str], lengths, starts
    ) -> Iterable[np.ndarray]:
        """Each demo's frames in turn (statistics)."""
        ...


class Storage(Protocol):
    """What loading fills: each array of a dataset once (packs and pairs, not their views)."""

    nbytes: int
    """Bytes held in RAM."""

    def reserve(self, frames: int, demos: int = 0) -> None:
        """Make room for `frames` frames of `demos` demos in all (one allocation per load)."""
        ...

    def append(
        self, reader: DemoReader, demos: list[str], lengths: np.ndarray, progress=None
    ) -> Callable[[], None] | None:
        """Add `demos` (inside a reader session); returns what finishes the byte reads
        after the session, if anything."""
        ...

    def truncate(self, frames: int, count: int) -> None:
        """Forget what an append that failed half-way added after `frames` / `count` demos."""
        ...


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


class ZeroArray:
    """A dataset key missing from the demos: zeros of shape (1,) per step (float32)."""

    cached = True
    frame_shape = (1,)
    dtype = np.dtype(np.float32)
    nbytes = 0

    def gather_windows(self, plan: BatchPlan) -> np.ndarray:
        return np.zeros((plan.win.size, plan.win.length, 1), dtype=np.float32)

    def gather_frames(
        self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray, plan: BatchPlan
    ) -> np.ndarray:
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

    def gather_windows(self, plan: BatchPlan) -> np.ndarray:
        win = plan.win
        out = plan.empty((win.size, win.length, *self.frame_shape), self.dtype)
        self.take_into(win.flat_frames, out.reshape((-1, *self.frame_shape)))
        return out

    def gather_frames(
        self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray, plan: BatchPlan
    ) -> np.ndarray:
        out = plan.empty((len(flat), *self.frame_shape), self.dtype)
        self.take_into(flat, out)
        return out

    def take_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        """out[i] = data[rows[i]] (indices are in range: mode="clip" writes straight into
        `out`, without numpy's buffering). One thread: two were slower here (an image
        block copies in about 0.25 ms at 14 GB/s, less than handing halves to threads)."""
        self._data.take(rows, axis=0, out=out, mode="clip")

    def demo_arrays(self, reader, demos, lengths, starts):
        for start, length in zip(starts, lengths):
            yield self._data[int(start) : int(start) + int(length)]


class WindowReads:
    """The batch reads of an array kind that reads windows into a caller's block
    (`read_windows(out, demo, begin, end, pad_front)`): windows with their padding, and
    single frames (goals). `FileArray` reads them from the file (in a reader session),
    `ram_chunks.RamChunks` decodes them from chunks held in RAM."""

    frame_shape: tuple[int, ...]
    dtype: np.dtype

    def reading(self) -> contextlib.AbstractContextManager:
        """The scope reads run in (a reader session for arrays read from the file)."""
        return contextlib.nullcontext()

    def gather_windows(self, plan: BatchPlan) -> np.ndarray:
        win = plan.win
        out = plan.empty((win.size, win.length, *self.frame_shape), self.dtype)
        with self.reading():
            self.read_windows(out, win.demo, win.begin, win.end, win.pad_front)
        fill_padding(out, win)
        return out

    def gather_frames(
        self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray, plan: BatchPlan
    ) -> np.ndarray:
        """Single frames, found by demo and step (`flat` is not needed)."""
        out = plan.empty((len(step), *self.frame_shape), self.dtype)
        zero = np.zeros(len(step), dtype=np.int64)
        with self.reading():
            self.read_windows(
                out.reshape(len(step), 1, *self.frame_shape), demo, step, step + 1, zero
            )
        return out


class FileArray(WindowReads):
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
        self.compressed = False
        """Whether some frames are read through h5py (compressed or otherwise not plain bytes)."""

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
        self.compressed = bool((self.offsets < 0).any())
        return None

    def reserve(self, frames: int, demos: int = 0) -> None:
        pass

    def truncate(self, frames: int, count: int) -> None:
        self.demos = self.demos[:count]
        self.offsets = self.offsets[:frames]
        self.starts = self.starts[:count]
        self.breaks = self.breaks[: frames + 1]
        self.frames = min(self.frames, frames)
        self.compressed = bool((self.offsets < 0).any())

    def read_windows(
        self,
        out: np.ndarray,
        demo: np.ndarray,
        begin: np.ndarray,
        end: np.ndarray,
        pad_front: np.ndarray,
    ) -> None:
        """Windows [begin, end) of demos `demo` into `out` (C-contiguous, made by the caller),
        each at its window's row from frame pad_front on.

        Windows stored uncompressed are one `os.preadv` each (a few when the frames are
        in chunks apart in the file), the others are read through h5py."""
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

        def where(b: int) -> str:
            return f"/data/{self.demos[int(demo[b])]}/{self.key}"

        def window(b: int) -> np.ndarray:
            return out[b, int(pad_front[b]) : int(pad_front[b]) + int(end[b] - begin[b])]

        for i in np.flatnonzero(stored).tolist():
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
        slow = np.flatnonzero(~stored).tolist()
        if slow:  # compressed: each chunk decoded once for the batch (loader/chunks.py)
            with reader.session():
                self._chunk_windows().read(
                    [self.demos[int(demo[b])] for b in slow],
                    [int(begin[b]) for b in slow],
                    [window(b) for b in slow],
                )

    def _chunk_windows(self) -> ChunkWindows:
        chunks = self.__dict__.get("_chunks")
        if chunks is None or chunks.reader is not self.reader:
            chunks = self._chunks = ChunkWindows(self.reader, self.key)
        return chunks

    def reading(self):
        return self.reader.session()

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
