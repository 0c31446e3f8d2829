"""Decoding a compressed array's stored chunks without HDF5's filter pipeline.

Reading a window of a compressed image array through h5py costs about twice the decoding
itself: HDF5 allocates a buffer per chunk, checks the checksum, lets the filter allocate
another, then copies the chunk through its dataspace machinery. For the filters demoset
writes (see format/compression.py) the loader can do the same work with less: fetch the
chunk's stored bytes (`read_direct_chunk`), check its Fletcher-32 checksum, decompress
straight into the batch's scratch block. The same holds for chunks of HDF5's Blosc filter
(the `lz4hc` setting): each is one Blosc buffer, decoded by numcodecs. Arrays stored with
any other filter (Blosc2, LZ4, bitshuffle, ...) keep the h5py path, which handles every
filter HDF5 has loaded.

The checksum is HDF5's Fletcher-32 compared modulo 65535 (HDF5's sums fold into 16 bits
and may end at 0xFFFF where the modular sum is 0: the same sums, one harmless
representation apart); the stored value is accepted in either byte order, as HDF5 accepts
files written by its old versions.
"""

from __future__ import annotations

import zlib

import h5py
import numpy as np

from demoset.format import filter_ids

ZSTD, DEFLATE, SHUFFLE, FLETCHER32, BLOSC = 32015, 1, 2, 3, 32001
DECODED_HERE = (ZSTD, DEFLATE, SHUFFLE, FLETCHER32, BLOSC)
CHECKSUM_BYTES = 4
FLETCHER_PIECE = 1 << 20
"""16-bit words checked at a time: their weighted sum stays within int64, and the weights
kept for them take at most 8 MB."""


class DamagedChunk(ValueError):
    """A stored chunk whose checksum or compressed stream is wrong."""


def _zstd_decoder():
    try:
        from numcodecs import Zstd
    except ImportError:  # pragma: no cover - numcodecs is a dependency
        return None
    return Zstd()


def _blosc_module():
    try:
        from numcodecs import blosc
    except ImportError:  # pragma: no cover - numcodecs is a dependency
        return None
    return blosc


class ChunkDecoder:
    """Decodes the stored chunks of one chunked dataset, or says it cannot (`for_dataset`)."""

    def __init__(self, filters: list[int], chunk_nbytes: int, itemsize: int):
        self.filters = filters
        """Filter ids in the order they were applied when writing."""
        self.chunk_nbytes = chunk_nbytes
        self.itemsize = itemsize
        self.checksum_bit = len(filters) - 1 if filters and filters[-1] == FLETCHER32 else None
        """The filter mask bit of a checksum appended last (None: there is none)."""
        self._zstd = _zstd_decoder() if ZSTD in filters else None
        self._blosc = _blosc_module() if BLOSC in filters else None

    @classmethod
    def for_dataset(cls, dset: h5py.Dataset) -> ChunkDecoder | None:
        """A decoder for `dset`'s filter pipeline, or None when only HDF5 can decode it."""
        if not dset.chunks or tuple(dset.chunks[1:]) != tuple(dset.shape[1:]):
            return None  # only chunks of whole frames are blocks of frames
        filters = filter_ids(dset)
        if not filters or any(f not in DECODED_HERE for f in filters):
            return None
        if ZSTD in filters and _zstd_decoder() is None:
            return None
        if BLOSC in filters and _blosc_module() is None:
            return None
        nbytes = int(np.prod(dset.chunks, dtype=np.int64)) * dset.dtype.itemsize
        return cls(filters, nbytes, dset.dtype.itemsize)

    def decode_into(self, stored: bytes, skipped: int, out: np.ndarray) -> None:
        """Fill `out` (one whole chunk, C-contiguous) from the chunk's stored bytes.

        `skipped` is HDF5's filter mask of the chunk: bit i set means filter i was not
        applied to it. Raises DamagedChunk when the bytes do not decode to the chunk.
        """
        steps = [kind for i, kind in enumerate(self.filters) if not skipped >> i & 1]
        data: bytes | memoryview = stored
        for kind in reversed(steps[1:]):
            data = self._undo(kind, data)
        target = out.reshape(-1).view(np.uint8)
        if steps and steps[0] == ZSTD:  # the usual case: decompressed straight into `out`
            size = self._zstd_into(data, target)
        elif steps and steps[0] == BLOSC:
            size = self._blosc_into(data, target)
        else:
            data = self._undo(steps[0], data) if steps else data
            size = len(data)
            if size == self.chunk_nbytes:
                target[:] = np.frombuffer(data, dtype=np.uint8)
        if size != self.chunk_nbytes:
            raise DamagedChunk(f"decoded to {size} bytes, not the chunk's {self.chunk_nbytes}")

    def _zstd_into(self, data: bytes | memoryview, target: np.ndarray) -> int:
        """Decompress one zstd frame into `target`, which it must fill exactly.

        The decoder writes into a buffer of the chunk's size without saying how much it
        wrote, so the size the frame declares is checked first."""
        try:
            if zstd_content_size(data) == len(target):
                self._zstd.decode(data, out=target)
                return len(target)
            whole = self._zstd.decode(data)  # several frames, or a damaged header
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise DamagedChunk(f"zstd: {exc}") from None
        if len(whole) != len(target):
            raise DamagedChunk(f"zstd stream holds {len(whole)} bytes, not {len(target)}")
        target[:] = np.frombuffer(whole, dtype=np.uint8)
        return len(target)

    def _blosc_into(self, data: bytes | memoryview, target: np.ndarray) -> int:
        """Decompress one Blosc buffer into `target`, which it must fill exactly.

        Blosc reads as many bytes as the buffer's header says it holds, so the header's
        sizes are checked against the stored bytes and the chunk first: a damaged header
        is an error, never a read past the chunk."""
        blosc = self._blosc
        try:
            nbytes, cbytes = blosc_sizes(data)
            if cbytes > len(data) or nbytes != len(target):
                raise ValueError(
                    f"header declares {nbytes} bytes in {cbytes}, the chunk holds "
                    f"{len(target)} in {len(data)}"
                )
            blosc.decompress(data, target)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise DamagedChunk(f"blosc: {exc}") from None
        return len(target)

    def _undo(self, kind: int, data: bytes | memoryview) -> bytes | memoryview:
        """One filter undone."""
        if kind == FLETCHER32:
            return checked(data)
        # every filter here keeps the chunk's size: a stream claiming more is damaged
        # (and must not make this process allocate what it claims)
        if kind in (ZSTD, BLOSC):
            target = np.empty(self.chunk_nbytes, dtype=np.uint8)
            (self._zstd_into if kind == ZSTD else self._blosc_into)(data, target)
            return memoryview(target)
        if kind == DEFLATE:
            stream = zlib.decompressobj()
            try:
                return stream.decompress(data, self.chunk_nbytes + 1)
            except zlib.error as exc:
                raise DamagedChunk(f"deflate: {exc}") from None
        return _unshuffled(data, self.itemsize)


ZSTD_MAGIC = 0xFD2FB528
DICTIONARY_ID_BYTES = (0, 1, 2, 4)


def zstd_content_size(data: bytes | memoryview) -> int | None:
    """The decompressed size a zstd frame's header declares (RFC 8878, 3.1.1.1), or None
    when the header is not a zstd frame's or declares no size."""
    if len(data) < 6 or int.from_bytes(data[:4], "little") != ZSTD_MAGIC:
        return None
    descriptor = data[4]
    size_flag, single_segment = descriptor >> 6, descriptor >> 5 & 1
    at = 5 + (0 if single_segment else 1) + DICTIONARY_ID_BYTES[descriptor & 3]
    width = (1 if single_segment else 0, 2, 4, 8)[size_flag]
    if width == 0 or len(data) < at + width:
        return None
    value = int.from_bytes(data[at : at + width], "little")
    return value + 256 if width == 2 else value


BLOSC_HEADER_BYTES = 16


def blosc_sizes(data: bytes | memoryview) -> tuple[int, int]:
    """(decompressed bytes, buffer bytes) a Blosc buffer's header declares (Blosc 1
    format: version, codec version, flags, type size, then three little-endian 32-bit
    sizes: uncompressed, block, compressed)."""
    if len(data) < BLOSC_HEADER_BYTES:
        raise ValueError("shorter than a Blosc header")
    header = bytes(data[:BLOSC_HEADER_BYTES])
    return int.from_bytes(header[4:8], "little"), int.from_bytes(header[12:16], "little")


def checked(data: bytes | memoryview) -> memoryview:
    """The chunk without its trailing Fletcher-32 checksum, once the checksum matches."""
    if len(data) < CHECKSUM_BYTES:
        raise DamagedChunk("shorter than its checksum")
    view = memoryview(data)
    body = view[:-CHECKSUM_BYTES]
    stored = int.from_bytes(view[-CHECKSUM_BYTES:], "little")
    low, high = fletcher32(body)
    swapped = int.from_bytes(stored.to_bytes(4, "little"), "big")
    for value in (stored, swapped):
        if (value & 0xFFFF) % 65535 == low and (value >> 16) % 65535 == high:
            return body
    raise DamagedChunk("checksum mismatch")


def fletcher32(data: bytes | memoryview) -> tuple[int, int]:
    """HDF5's Fletcher-32 sums of `data` (big-endian 16-bit words), each modulo 65535.

    For k words w_0 .. w_{k-1} the first sum is the words' sum and the second the sum of
    the running sums, which weights w_i by k - i: k * first - sum(i * w_i), one sum and one
    dot product per piece (numpy releases the GIL in both, so chunks are checked on the
    batch's threads side by side; a running sum did not let them)."""
    size = len(data)
    count = size // 2
    first = second = 0
    for start in range(0, count, FLETCHER_PIECE):
        stop = min(start + FLETCHER_PIECE, count)
        words = np.frombuffer(data, dtype=">u2", count=stop - start, offset=2 * start)
        words = words.astype(np.int64)
        piece_sum = int(words.sum())
        weighted = int(np.dot(words, _weights(stop - start)))
        second += (count - start) * piece_sum - weighted
        first += piece_sum
    if size % 2:
        first += data[size - 1] << 8
        second += first
    return first % 65535, second % 65535


_WEIGHTS = np.zeros(0, dtype=np.int64)


def _weights(count: int) -> np.ndarray:
    """0, 1, .., count - 1 (int64), from one array kept and grown as needed."""
    global _WEIGHTS
    weights = _WEIGHTS
    if len(weights) < count:
        weights = _WEIGHTS = np.arange(max(count, 2 * len(weights)), dtype=np.int64)
    return weights[:count]


def _unshuffled(data: bytes | memoryview, itemsize: int) -> bytes:
    """HDF5's shuffle filter undone: byte planes back into interleaved elements."""
    raw = np.frombuffer(data, dtype=np.uint8)
    whole = len(raw) // itemsize * itemsize
    out = np.empty(len(raw), dtype=np.uint8)
    out[:whole] = raw[:whole].reshape(itemsize, -1).T.reshape(-1)
    out[whole:] = raw[whole:]
    return out.tobytes()
