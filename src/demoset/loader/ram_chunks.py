"""Compressed image chunks held in shared RAM and decoded per batch (`cache_compressed`).

A file written by `demoset compress` stores each demo's camera frames in chunks of several
frames, 5-10x smaller than the frames (zstd and a Fletcher-32 checksum per chunk by
default, see format/compression.py). Cache "all" of the raw frames needs their full size;
holding the stored chunks instead needs about their stored size, so a dataset several
times larger than RAM can still be cached. The price is decoding: a batch decodes each chunk its
windows touch once, on the batch's threads (`threads.py`: one inside a DataLoader worker),
instead of copying frames.

A `RamChunks` holds one key (e.g. "obs/agentview_image") of all selected demos:

- one shared-memory uint8 buffer with every chunk's stored bytes back to back (a torch
  shared storage, as `arrays.RamArray`'s: DataLoader workers, forked or spawned, map the
  same pages instead of copying them);
- per chunk: byte offset and size in the buffer, HDF5 filter mask, and which codec (filter
  pipeline and frames per chunk) decodes it; per demo: its first chunk, its first flat
  frame and its frames per chunk.

Loading fetches each chunk's stored bytes with `read_direct_chunk` and checks its
Fletcher-32 checksum right away, so a damaged chunk is refused when the dataset is made,
with a `LayoutError` naming the demo, key and frames; the chunk is then held without its
checksum and a batch does not check it again. A chunk stored without a checksum (deflate
alone) can only be checked by decoding it: damage there raises the same kind of error from
the first batch that needs the chunk (or at load, for keys in a `chunk_pair.ChunkPair`,
which decodes every frame then).

Which keys: image keys whose first demo's filters `ChunkDecoder` decodes (zstd, Blosc,
deflate, shuffle, fletcher32: what `demoset compress` writes with its `zstd` and `lz4hc`
settings) in chunks of whole frames (`decodable_keys`). Any other storage (Blosc2, plain
LZ4, bitshuffle, uncompressed, chunks that split frames) keeps the raw "all" cache
(`RamArray`, `shifted.ShiftedPair`). A later demo of a chosen key that cannot be decoded
this way (other filters, chunks never written) is read through h5py and held raw, in
chunks of `RAW_CHUNK_FRAMES` frames.

An image key whose obs and next_obs are both held this way is one `chunk_pair.ChunkPair`:
next_obs held once where it is obs one step on, obs decoded once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import h5py
import numpy as np

from demoset.errors import LayoutError
from demoset.format import read_failure
from demoset.loader.alloc import shared_array
from demoset.loader.arrays import WindowReads
from demoset.loader.chunk_codec import ChunkDecoder, DamagedChunk, checked
from demoset.loader.chunks import SCRATCH_BYTES, ChunkPlaces, decode_all, reused_block
from demoset.loader.reader import DemoReader

RAW_CHUNK_FRAMES = 16
"""Frames per chunk of a demo held raw (one ChunkDecoder cannot decode)."""


def decodable_keys(reader: DemoReader, demo: str, keys: Iterable[str]) -> frozenset[str]:
    """The keys of `keys` whose array in `demo` ChunkDecoder can decode from its stored
    chunks (inside a reader session): the keys `RamChunks` holds compressed."""
    return frozenset(
        key for key in keys if ChunkDecoder.for_dataset(reader.dataset(demo, key)) is not None
    )


class DecodedWindows(WindowReads):
    """An array kind whose windows are decoded from chunks held in RAM (`RamChunks`,
    `chunk_pair.NextSide`): `WindowReads`' batch reads, and whole demos (statistics)."""

    cached = True
    compressed = True
    """Frames cost a decode: FilePair reads obs and next_obs once even with padding."""

    def demo_length(self, d: int) -> int:
        """Frames of demo `d` (a position in this array)."""
        raise NotImplementedError

    def demo_frames(self, d: int) -> np.ndarray:
        """All frames of demo `d` (a position in this array), decoded."""
        length = self.demo_length(d)
        out = np.empty((1, length, *self.frame_shape), dtype=self.dtype)
        zero = np.zeros(1, dtype=np.int64)
        self.read_windows(out, np.array([d]), zero, np.array([length]), zero)
        return out[0]

    def demo_arrays(self, reader, demos, lengths, starts):
        for d in range(len(lengths)):
            yield self.demo_frames(d)


class RamChunks(DecodedWindows):
    """One image key of all selected demos as compressed chunks in one shared buffer."""

    def __init__(self, key: str, frame_shape: tuple[int, ...], dtype, path: str):
        self.key = key
        self.path = path
        self.frame_shape = tuple(frame_shape)
        self.dtype = np.dtype(dtype)
        self.frame_bytes = int(np.prod(self.frame_shape, dtype=np.int64)) * self.dtype.itemsize
        self.demos: list[str] = []
        self.starts = np.zeros(0, dtype=np.int64)
        """Per demo: its first flat frame."""
        self.first_chunk = np.zeros(0, dtype=np.int64)
        """Per demo: its first chunk."""
        self.per = np.zeros(0, dtype=np.int64)
        """Per demo: frames per chunk."""
        self.offset = np.zeros(0, dtype=np.int64)
        """Per chunk: where its bytes start in the buffer."""
        self.size = np.zeros(0, dtype=np.int64)
        """Per chunk: its stored bytes (without a checksum checked at load)."""
        self.mask = np.zeros(0, dtype=np.int64)
        """Per chunk: HDF5's filter mask (bit i set: filter i was not applied)."""
        self.codec = np.zeros(0, dtype=np.int64)
        """Per chunk: its position in `codecs`."""
        self.codecs: list[tuple[tuple[int, ...], int]] = []
        """(filter ids held, frames per chunk) of each way chunks are stored."""
        self.frames = 0
        self.used = 0
        """Bytes of the buffer filled."""
        self._wanted = 0
        self._owner, self._data = shared_array((0,), np.uint8)
        self._decoders: dict[int, ChunkDecoder] = {}
        self._block: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """The shared buffer and the chunk and demo tables."""
        tables = (self.starts, self.first_chunk, self.per, self.offset, self.size, self.mask)
        return int(self._data.nbytes) + sum(int(t.nbytes) for t in (*tables, self.codec))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_capacity"] = len(self._data)
        for name in ("_data", "_decoders", "_block"):  # the owner tensor goes by handle
            state.pop(name)
        return state

    def __setstate__(self, state):
        capacity = state.pop("_capacity")
        self.__dict__.update(state)
        self._data = self._owner.numpy()[:capacity]
        self._decoders = {}
        self._block = None

    # ------------------------------------------------------------------ loading
    def measure(self, reader: DemoReader, demos: Sequence[str], lengths: np.ndarray) -> int:
        """Bytes `demos` will take (inside a reader session): their chunks' stored size, or
        their raw frames where they will be held raw. The next `reserve` makes room for
        them in one allocation."""
        total = 0
        for demo, length in zip(demos, lengths):
            # not kept in the reader's session (HDF5 holds memory for each open dataset)
            dset = reader.demofile().dataset(demo, self.key)
            if ChunkDecoder.for_dataset(dset) is not None:
                total += int(dset.id.get_storage_size())
            else:
                total += _raw_chunks(int(length)) * RAW_CHUNK_FRAMES * self.frame_bytes
        self._wanted = total
        return total

    def reserve(self, frames: int, demos: int = 0) -> None:
        """Make room for the bytes the last `measure` counted."""
        if self.used + self._wanted > len(self._data):
            self._grow(self.used + self._wanted)
        self._wanted = 0

    def append(self, reader: DemoReader, demos: list[str], lengths: np.ndarray, progress=None):
        """Copy the stored chunks of `demos` into the buffer (inside a reader session),
        checking their checksums; nothing is left to finish after the session."""
        used = self.used
        tables: list[tuple] = []
        frames, chunks = self.frames, len(self.offset)
        try:
            for demo, length in zip(demos, lengths):
                length = int(length)
                dset = reader.dataset(demo, self.key)
                part = self._stored(reader, dset, demo, length)
                if part is None:
                    part = self._raw(reader, demo, length)
                per, sizes, offsets, masks, codec = part
                tables.append((frames, chunks, per, offsets, sizes, masks, codec))
                frames += length
                chunks += len(offsets)
                if progress is not None:
                    progress(length)
        except BaseException:
            self.used = used
            raise
        if tables:
            self._add(demos, tables, frames)
        return None

    def _stored(self, reader: DemoReader, dset: h5py.Dataset, demo: str, length: int):
        """(per, sizes, offsets, masks, codec) of a demo held as its stored chunks, or None
        when ChunkDecoder cannot decode them (or some chunk was never written)."""
        decoder = ChunkDecoder.for_dataset(dset)
        places = None if decoder is None else ChunkPlaces.of(demo, dset, decoder)
        if places is None:
            return None  # other filters, or chunks never written (the fill value): h5py's job
        per = places.per
        tail = (0,) * (dset.ndim - 1)
        bit = decoder.checksum_bit  # a checksum appended last: checked now, then held without
        held = tuple(decoder.filters[:bit] if bit is not None else decoder.filters)
        chunk_sizes = places.sizes[: -(-length // per)].tolist()  # the demo's steps only
        self._ensure(sum(chunk_sizes))
        where = f"/data/{demo}/{self.key}"
        offsets, sizes, masks = [], [], []
        for c, stored in enumerate(chunk_sizes):
            at, size = self.used, stored
            try:
                skipped, _ = dset.id.read_direct_chunk(
                    (c * per, *tail), out=self._data[at : at + size]
                )
                if bit is not None and not skipped >> bit & 1:
                    size = len(checked(self._data[at : at + size]))
                    skipped &= ~(1 << bit)
            except (DamagedChunk, OSError, ValueError, KeyError, RuntimeError) as exc:
                stop = min((c + 1) * per, length)
                raise read_failure(dset, reader.path, where, c * per, stop, exc) from None
            self.used += stored
            offsets.append(at)
            sizes.append(size)
            masks.append(skipped)
        return per, sizes, offsets, masks, self._codec_index(held, per)

    def _raw(self, reader: DemoReader, demo: str, length: int):
        """A demo read through h5py and held as raw chunks of RAW_CHUNK_FRAMES frames."""
        count = _raw_chunks(length)
        frames = np.zeros((count * RAW_CHUNK_FRAMES, *self.frame_shape), dtype=self.dtype)
        reader.read_into(demo, self.key, frames[:length])
        nbytes = RAW_CHUNK_FRAMES * self.frame_bytes
        self._ensure(count * nbytes)
        at = self.used
        self._data[at : at + frames.nbytes] = frames.reshape(-1).view(np.uint8)
        self.used += frames.nbytes
        offsets = [at + c * nbytes for c in range(count)]
        codec = self._codec_index((), RAW_CHUNK_FRAMES)
        return RAW_CHUNK_FRAMES, [nbytes] * count, offsets, [0] * count, codec

    def _add(self, demos: list[str], tables: list[tuple], frames: int) -> None:
        """Record the demos and chunks `append` stored (only once all of them are in)."""
        self.demos = self.demos + list(demos)
        column = list(zip(*tables))
        self.starts = np.concatenate([self.starts, column[0]]).astype(np.int64)
        self.first_chunk = np.concatenate([self.first_chunk, column[1]]).astype(np.int64)
        self.per = np.concatenate([self.per, column[2]]).astype(np.int64)
        for name, values in zip(("offset", "size", "mask"), column[3:6]):
            flat = np.concatenate([getattr(self, name), *map(np.asarray, values)])
            setattr(self, name, flat.astype(np.int64))
        codec = [np.full(len(t[3]), t[6], dtype=np.int64) for t in tables]
        self.codec = np.concatenate([self.codec, *codec])
        self.frames = frames

    def _codec_index(self, filters: tuple[int, ...], per: int) -> int:
        """Position of (filters, frames per chunk) in `codecs` (no filters: raw chunks)."""
        entry = (tuple(filters), per)
        if entry not in self.codecs:
            self.codecs.append(entry)
        return self.codecs.index(entry)

    def _ensure(self, nbytes: int) -> None:
        """Room for `nbytes` more (growing by a quarter at least when `measure` was short)."""
        need = self.used + nbytes
        if need > len(self._data):
            self._grow(max(need, len(self._data) + len(self._data) // 4))

    def _grow(self, capacity: int) -> None:
        owner, data = shared_array((capacity,), np.uint8)
        data[: self.used] = self._data[: self.used]
        self._owner, self._data = owner, data

    def truncate(self, frames: int, count: int) -> None:
        """Forget demos after the first `count` (an append that failed half-way)."""
        if count < len(self.demos):
            chunk = int(self.first_chunk[count])
            self.used = int(self.offset[chunk]) if chunk < len(self.offset) else self.used
            self.demos = self.demos[:count]
            for name in ("starts", "first_chunk", "per"):
                setattr(self, name, getattr(self, name)[:count])
            for name in ("offset", "size", "mask", "codec"):
                setattr(self, name, getattr(self, name)[:chunk])
        self.frames = min(self.frames, frames)

    # ------------------------------------------------------------------ reading
    def read_windows(self, out: np.ndarray, demo, begin, end, pad_front, rows=None) -> None:
        """Windows [begin, end) of demos `demo` (positions in this array; int arrays, like
        `begin`, `end` and `pad_front`) into `out` (C-contiguous), each at its row of `out`
        (`rows`, default 0, 1, ...) from frame pad_front on: every chunk the windows touch
        decoded once (a part of about SCRATCH_BYTES of decoded frames at a time). Empty
        windows are left alone."""
        demo = np.asarray(demo, dtype=np.int64)
        rows = np.arange(len(demo)) if rows is None else np.asarray(rows, dtype=np.int64)
        keep = np.flatnonzero(end > begin)
        if len(keep) < len(demo):
            demo, begin, end, pad_front, rows = (
                np.asarray(a)[keep] for a in (demo, begin, end, pad_front, rows)
            )
        if not len(demo):
            return
        per = self.per[demo]
        first = self.first_chunk[demo] + begin // per  # chunk of the window's first frame
        last = self.first_chunk[demo] + (end - 1) // per
        # the window's first frame in the first chunk's decoded frames
        within = begin - (first - self.first_chunk[demo]) * per
        chunks = _spanned(first, last)
        parts = math.ceil(int(self._chunk_bytes(chunks).sum()) / SCRATCH_BYTES)
        groups = [np.arange(len(demo))]
        if parts > 1:  # a batch of many big frames: decoded a part at a time
            groups = np.array_split(np.argsort(first, kind="stable"), parts)
        for g in groups:
            if parts > 1:
                chunks = _spanned(first[g], last[g])
            frames, at = self._decode(chunks)
            src = at[np.searchsorted(chunks, first[g])] + within[g]
            copies = zip(
                rows[g].tolist(), pad_front[g].tolist(), src.tolist(), (end - begin)[g].tolist()
            )
            for b, f, r, n in copies:
                out[b, f : f + n] = frames[r : r + n]

    def demo_length(self, d: int) -> int:
        stop = self.frames if d + 1 == len(self.starts) else int(self.starts[d + 1])
        return stop - int(self.starts[d])

    def _chunk_bytes(self, chunks: np.ndarray) -> np.ndarray:
        """Decoded bytes of each chunk."""
        per = np.array([p for _, p in self.codecs], dtype=np.int64)
        return per[self.codec[chunks]] * self.frame_bytes

    def _decode(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode `chunks` (sorted, unique) one after another into the scratch block:
        (its frames, the first frame of each chunk in it). A window's chunks are adjacent,
        so its frames lie one after another there."""
        nbytes = self._chunk_bytes(chunks)
        ends = np.cumsum(nbytes)
        scratch = self._scratch(int(ends[-1]))
        data = self._data
        jobs = []
        for c, a, b in zip(chunks.tolist(), (ends - nbytes).tolist(), ends.tolist()):
            start, size = int(self.offset[c]), int(self.size[c])
            stored = memoryview(data[start : start + size])
            jobs.append(
                (self._decoder(int(self.codec[c])), stored, int(self.mask[c]), scratch[a:b], c)
            )
        decode_all(jobs, self._failure)
        frames = scratch.view(self.dtype).reshape(-1, *self.frame_shape)
        return frames, (ends - nbytes) // self.frame_bytes

    def _decoder(self, index: int) -> ChunkDecoder:
        """The decoder of codec `index`, made once per process."""
        decoder = self._decoders.get(index)
        if decoder is None:
            filters, per = self.codecs[index]
            nbytes = per * self.frame_bytes
            decoder = self._decoders[index] = ChunkDecoder(
                list(filters), nbytes, self.dtype.itemsize
            )
        return decoder

    def _scratch(self, nbytes: int) -> np.ndarray:
        self._block = reused_block(self._block, nbytes)
        return self._block[:nbytes]

    def _failure(self, chunk: int, exc: BaseException) -> LayoutError:
        """The error for a chunk that did not decode: its demo, key and frames."""
        d = int(np.searchsorted(self.first_chunk, chunk, side="right")) - 1
        per = int(self.per[d])
        a = (chunk - int(self.first_chunk[d])) * per
        b = min(a + per, self.demo_length(d))
        return LayoutError(
            f"cannot decompress frames {a}-{b - 1} (a damaged chunk held in RAM: {exc})",
            self.path,
            f"/data/{self.demos[d]}/{self.key}",
        )


def _raw_chunks(length: int) -> int:
    return max(-(-length // RAW_CHUNK_FRAMES), 1)


def _spanned(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Every chunk from first[i] to last[i] for some i, sorted, once."""
    counts = last - first + 1
    ramp = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.unique(np.repeat(first, counts) + ramp)
