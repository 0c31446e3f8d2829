"""Windows of a compressed image array read chunk by chunk: each chunk decoded once per batch.

A compressed array (see format/compression.py) is stored in chunks of several frames of
one demo. Reading window after window through h5py decodes a chunk again for every window
that touches it, and resolves the dataset again each time (a path lookup with safety
checks, about as slow as decoding a chunk). Here the windows of one batch are grouped by
demo; for each demo the chunks any of its windows need are read once, run by run of
adjacent chunks (one h5py read decodes each chunk of a run once, straight into a scratch
block), and every window copies its frames out of that block.

Dataset handles are kept per process (a small LRU), except in follow (swmr) mode, where
they live only as long as the reader session, as DemoReader requires.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from demoset.errors import DemosetError, LayoutError
from demoset.format import read_failure
from demoset.loader.chunk_codec import CHECKSUM_BYTES, ChunkDecoder, DamagedChunk
from demoset.loader.threads import batch_threads, thread_pool

HANDLES = 512
"""Resolved dataset handles kept per process (each holds a little HDF5 memory)."""
SCRATCH_BYTES = 32 << 20
"""Decoded chunks held at once per key and process (a batch larger than this is decoded
in parts)."""


class ChunkWindows:
    """Reads windows of one key of a `DemoReader` through whole chunks (one per file array)."""

    def __init__(self, reader, key: str):
        self.reader = reader
        self.key = key
        self._pid: int | None = None
        self._handles: OrderedDict[str, h5py.Dataset] = OrderedDict()
        self._block: np.ndarray | None = None
        self._stored: np.ndarray | None = None
        self._places: dict[str, ChunkPlaces | None] = {}
        """Per demo, where its chunks lie in the file (None: read through h5py)."""

    def __getstate__(self):
        return {"reader": self.reader, "key": self.key}

    def __setstate__(self, state):
        self.__init__(state["reader"], state["key"])

    def _dataset(self, demo: str) -> h5py.Dataset:
        reader = self.reader
        if reader.swmr:
            # a fresh handle each session: a plain lookup by path. The safety checks of
            # DemoFile.dataset (links out of the file, declared size; the latter walks the
            # chunk index) ran when the demo was indexed, and a committed demo never
            # changes (writers only append), so they are not repeated for every batch.
            try:
                return reader.demofile().h5[f"/data/{demo}/{self.key}"]
            except (KeyError, OSError, ValueError, RuntimeError):
                return reader.dataset(demo, self.key)  # let it raise its own error
        if self._pid != os.getpid():  # handles of another process are not ours to use
            self._handles = OrderedDict()
            self._pid = os.getpid()
        dset = self._handles.get(demo)
        if dset is None:
            dset = reader.dataset(demo, self.key)
            self._handles[demo] = dset
            if len(self._handles) > HANDLES:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(demo)
        return dset

    def read(self, demos: list[str], begins: list[int], outs: list[np.ndarray]) -> None:
        """outs[i][:] = frames begins[i] .. begins[i] + len(outs[i]) of demo demos[i].

        Called inside a reader session. Each chunk is decoded at most once per call: by
        demoset from its stored bytes where the filters allow (all the batch's chunks
        together, on `batch_threads()` threads), else by HDF5 in runs of adjacent chunks.
        """
        by_demo: dict[str, list[int]] = {}
        for i, demo in enumerate(demos):
            by_demo.setdefault(demo, []).append(i)
        decoded: list[tuple[ChunkPlaces, list[int], list[int]]] = []
        for demo, items in by_demo.items():
            where = f"/data/{demo}/{self.key}"
            stops = {i: begins[i] + len(outs[i]) for i in items}
            places = self._places_of(demo)
            if places is not None:  # no HDF5 call: the chunks' bytes are read directly
                if max(stops.values()) > places.frames:
                    raise LayoutError(
                        f"array has {places.frames} steps, fewer than the demo's "
                        f"{max(stops.values())}",
                        self.reader.path,
                        where,
                    )
                per = places.per
                needed: set[int] = set()
                for i in items:
                    needed.update(range(begins[i] // per, -(-stops[i] // per)))
                decoded.append((places, items, sorted(needed)))
                continue
            dset = self._dataset(demo)
            n = int(dset.shape[0])
            if max(stops.values()) > n:
                raise LayoutError(
                    f"array has {n} steps, fewer than the demo's {max(stops.values())}",
                    self.reader.path,
                    where,
                )
            if not dset.chunks:  # contiguous: each window is one plain read
                for i in items:
                    self._read_block(dset, outs[i], begins[i], stops[i], where)
                continue
            per = int(dset.chunks[0])
            needed = set()
            for i in items:
                needed.update(range(begins[i] // per, -(-stops[i] // per)))
            for first, last in _runs(sorted(needed)):
                a, b = first * per, min((last + 1) * per, n)
                block = np.empty((b - a, *dset.shape[1:]), dtype=outs[items[0]].dtype)
                self._read_block(dset, block, a, b, where)
                for i in items:  # a window's chunks are adjacent: it lies in one run
                    if begins[i] >= a and stops[i] <= b:
                        outs[i][...] = block[begins[i] - a : stops[i] - a]
        group: list = []
        group_bytes = 0
        for entry in decoded:  # at most about SCRATCH_BYTES of decoded chunks at a time
            nbytes = entry[0].decoder.chunk_nbytes * len(entry[2])
            if group and group_bytes + nbytes > SCRATCH_BYTES:
                self._decode_windows(group, begins, outs)
                group, group_bytes = [], 0
            group.append(entry)
            group_bytes += nbytes
        if group:
            self._decode_windows(group, begins, outs)

    def _decode_windows(self, decoded: list, begins: list[int], outs: list[np.ndarray]) -> None:
        """Read the stored bytes of every needed chunk, decode them all, copy the windows.

        A window's chunks are adjacent and all needed, so they lie one after another in
        its demo's part of the scratch block."""
        scratch = self._scratch(sum(p.decoder.chunk_nbytes * len(c) for p, _, c in decoded))
        wanted = [(places, c) for places, _, chunks in decoded for c in chunks]
        stored = self._read_stored(wanted)
        jobs: list[tuple] = []
        copies: list[tuple[np.ndarray, np.ndarray, int]] = []
        at = 0
        for places, items, chunks in decoded:
            per = places.per
            nbytes = places.decoder.chunk_nbytes * len(chunks)
            block = scratch[at : at + nbytes].view(places.dtype)
            block = block.reshape(len(chunks) * per, *places.frame_shape)
            at += nbytes
            for j, c in enumerate(chunks):
                dest = block[j * per : (j + 1) * per]
                jobs.append(
                    (places.decoder, next(stored), int(places.masks[c]), dest, (places.demo, c))
                )
            position = {c: j for j, c in enumerate(chunks)}
            for i in items:
                c = begins[i] // per
                copies.append((outs[i], block, position[c] * per + begins[i] - c * per))
        decode_all(jobs, lambda at, exc: self._failure(*at, exc))
        for places, c in wanted:
            places.checksum_matched(c)
        for out, block, row in copies:
            out[...] = block[row : row + len(out)]

    def _read_stored(self, wanted: list) -> Iterator[memoryview]:
        """The stored bytes of each (places, chunk) of `wanted`, read with one `preadv`
        each into one reused buffer (the views stay valid until the next batch)."""
        sizes = [int(places.sizes[c]) for places, c in wanted]
        self._stored = reused_block(self._stored, sum(sizes))
        buffer = memoryview(self._stored)
        fd = self.reader.fd()
        views = []
        at = 0
        for (places, c), size in zip(wanted, sizes):
            view = buffer[at : at + size]
            at += size
            if os.preadv(fd, [view], int(places.offsets[c])) != size:
                raise LayoutError(
                    "file ended inside a compressed chunk (truncated?)",
                    self.reader.path,
                    f"/data/{places.demo}/{self.key}",
                )
            views.append(view)
        return iter(views)

    def _failure(self, demo: str, chunk: int, exc: BaseException) -> DemosetError:
        """The error naming a damaged chunk's demo, key and frames (HDF5 is asked for the
        dataset only now, to name a missing filter as everywhere else)."""
        with self.reader.session():
            dset = self._dataset(demo)
            per = int(dset.chunks[0])
            a = chunk * per
            stop = min(a + per, int(dset.shape[0]))
            where = f"/data/{demo}/{self.key}"
            return read_failure(dset, self.reader.path, where, a, stop, exc)

    def _places_of(self, demo: str) -> ChunkPlaces | None:
        """Where `demo`'s chunks lie, found once per process (None: h5py reads them)."""
        if self._pid != os.getpid():
            self._handles, self._places, self._pid = OrderedDict(), {}, os.getpid()
        if demo not in self._places:
            dset = self._dataset(demo)
            decoder = ChunkDecoder.for_dataset(dset)
            self._places[demo] = None if decoder is None else ChunkPlaces.of(demo, dset, decoder)
        return self._places[demo]

    def _scratch(self, nbytes: int) -> np.ndarray:
        """Bytes reused from batch to batch: a fresh block of this size would be mapped
        anew by the allocator and fault in page by page, which costs as much as decoding."""
        self._block = reused_block(self._block, nbytes)
        return self._block[:nbytes]

    def _read_block(self, dset, out: np.ndarray, a: int, b: int, where: str) -> None:
        try:
            if b > a:
                dset.read_direct(out, np.s_[a:b])
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise read_failure(dset, self.reader.path, where, a, b, exc) from None


@dataclass
class ChunkPlaces:
    """Where one demo's chunks of a key lie in the file: offset, stored size and filter
    mask of every chunk, in frame order, with what decoding them needs.

    Chunks of a committed demo never move (writers only append), so the loader reads
    them by byte offset like uncompressed frames, without HDF5 after this is made."""

    demo: str
    per: int
    frames: int
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    decoder: ChunkDecoder
    offsets: np.ndarray
    sizes: np.ndarray
    masks: np.ndarray

    def checksum_matched(self, chunk: int) -> None:
        """`chunk` decoded and its checksum matched: later reads leave the checksum out.

        A committed chunk never changes, and checking 100 KB costs about as much as
        decoding it, so each chunk's checksum is checked once per process, the first
        time a batch needs it (the chunk is then marked as stored without it: HDF5's
        filter mask bit of the checksum set, the size 4 bytes less)."""
        bit = self.decoder.checksum_bit
        if bit is not None and not self.masks[chunk] >> bit & 1:
            self.masks[chunk] |= 1 << bit
            self.sizes[chunk] -= CHECKSUM_BYTES

    @classmethod
    def of(cls, demo: str, dset: h5py.Dataset, decoder: ChunkDecoder) -> ChunkPlaces | None:
        """The places of `dset`'s chunks, or None when a chunk is not written (HDF5 fills
        it with the fill value: left to h5py)."""
        per = int(dset.chunks[0])
        tail = (0,) * (dset.ndim - 1)
        count = -(-int(dset.shape[0]) // per)
        try:
            infos = [dset.id.get_chunk_info_by_coord((c * per, *tail)) for c in range(count)]
        except (OSError, ValueError, RuntimeError):
            return None
        if any(info.byte_offset is None for info in infos):
            return None
        offsets = np.array([info.byte_offset for info in infos], dtype=np.int64)
        sizes = np.array([info.size for info in infos], dtype=np.int64)
        masks = np.array([info.filter_mask for info in infos], dtype=np.int64)
        return cls(demo, per, int(dset.shape[0]), tuple(dset.shape[1:]), dset.dtype, decoder,
                   offsets, sizes, masks)  # fmt: skip


def decode_all(jobs: list[tuple], failure: Callable[[Any, DamagedChunk], DemosetError]) -> None:
    """Decode every job's chunk into its place, on the batch's threads (`threads.py`); the
    first damaged chunk raises `failure(where, exc)`.

    A job is (ChunkDecoder, stored bytes, filter mask, destination, where): `where` is
    whatever `failure` needs to name the chunk. Used by `ChunkWindows` (chunks read from
    the file) and `ram_chunks.RamChunks` (chunks held in RAM)."""

    def decode(job: tuple) -> DemosetError | None:
        decoder, stored, skipped, dest, where = job
        try:
            decoder.decode_into(stored, skipped, dest)
        except DamagedChunk as exc:
            return failure(where, exc)
        return None

    threads = batch_threads()
    if threads > 1 and len(jobs) > 1:
        results = list(thread_pool(threads).map(decode, jobs))
    else:
        results = [decode(job) for job in jobs]
    for failed in results:
        if failed is not None:
            raise failed


def reused_block(block: np.ndarray | None, nbytes: int) -> np.ndarray:
    """`block` when it holds `nbytes`, else a new one of at least twice its size: scratch
    bytes reused from batch to batch (see `ChunkWindows._scratch`)."""
    if block is None or block.nbytes < nbytes:
        block = np.empty(max(nbytes, 2 * (0 if block is None else block.nbytes)), dtype=np.uint8)
    return block


def _runs(chunks: list[int]) -> list[tuple[int, int]]:
    """Runs of adjacent chunk indices: [(first, last), ...]."""
    runs: list[tuple[int, int]] = []
    for c in chunks:
        if runs and c == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    return runs
