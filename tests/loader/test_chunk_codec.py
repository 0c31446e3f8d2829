"""Chunks decoded from their stored bytes give what HDF5 gives, and damage is caught.

The loader decodes zstd, Blosc, deflate and shuffle chunks itself and checks HDF5's Fletcher-32
checksum (loader/chunk_codec.py); h5py with hdf5plugin is the reference for every chunk.
"""

from __future__ import annotations

import h5py
import hdf5plugin
import numpy as np
import pytest

from demoset.loader import chunk_codec
from demoset.loader.chunk_codec import ChunkDecoder, DamagedChunk, fletcher32


def hdf5_fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 as its C code computes it: folded sums, word by word."""
    sum1 = sum2 = 0
    words = len(data) // 2
    i = 0
    while words:
        block = min(words, 360)
        words -= block
        for _ in range(block):
            sum1 += (data[i] << 8) | data[i + 1]
            i += 2
            sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    if len(data) % 2:
        sum1 += data[i] << 8
        sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


@pytest.mark.parametrize("size", [0, 1, 2, 3, 719, 720, 721, 5001, 40_000])
@pytest.mark.parametrize("piece", [None, 7, 360])
def test_fletcher32_matches_hdf5s(size, piece, monkeypatch):
    """Also with the data checked in small pieces (as chunks over 2 MB are)."""
    if piece is not None:
        monkeypatch.setattr(chunk_codec, "FLETCHER_PIECE", piece)
    rng = np.random.default_rng(size)
    for data in (rng.integers(0, 256, size, dtype=np.uint8).tobytes(), b"\xff" * size):
        value = hdf5_fletcher32(data)
        assert fletcher32(data) == ((value & 0xFFFF) % 65535, (value >> 16) % 65535)


def frames(n: int, shape=(10, 12, 3)) -> np.ndarray:
    """Video-like frames: a moving gradient plus a little noise."""
    rng = np.random.default_rng(0)
    base = np.add.outer(np.arange(shape[0]), np.arange(shape[1]))[..., None]
    video = [(base + 3 * t + rng.integers(0, 3, shape)) % 256 for t in range(n)]
    return np.asarray(video, dtype=np.uint8)


STORAGES = {
    "zstd+fletcher32": dict(**hdf5plugin.Zstd(clevel=9), fletcher32=True),
    "zstd": dict(**hdf5plugin.Zstd(clevel=3)),
    "gzip+shuffle+fletcher32": dict(compression="gzip", shuffle=True, fletcher32=True),
    "gzip": dict(compression="gzip"),
    "blosc-lz4hc+fletcher32": dict(
        **hdf5plugin.Blosc(cname="lz4hc", clevel=9, shuffle=hdf5plugin.Blosc.SHUFFLE),
        fletcher32=True,
    ),
    "blosc-lz4": dict(**hdf5plugin.Blosc(cname="lz4", clevel=5)),
}


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_decoded_chunks_equal_hdf5s(tmp_path, storage, dtype):
    data = frames(21).astype(dtype)
    if dtype == np.float32:
        data = data / 7.0  # depth-like floats
    path = tmp_path / "c.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(8, *data.shape[1:]), **STORAGES[storage])
    with h5py.File(path, "r") as f:
        dset = f["x"]
        decoder = ChunkDecoder.for_dataset(dset)
        assert decoder is not None
        for c in range(3):  # the last chunk is partly beyond the array: stored whole
            skipped, stored = dset.id.read_direct_chunk((8 * c, 0, 0, 0))
            out = np.empty(dset.chunks, dtype=dset.dtype)
            decoder.decode_into(stored, skipped, out)
            real = data[8 * c : 8 * c + 8]
            np.testing.assert_array_equal(out[: len(real)], real)


def test_damage_and_foreign_filters(tmp_path):
    data = frames(16)
    path = tmp_path / "c.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("zstd", data=data, chunks=(8, *data.shape[1:]), fletcher32=True,
                         **hdf5plugin.Zstd(clevel=9))  # fmt: skip
        f.create_dataset("blosc2", data=data, chunks=(8, *data.shape[1:]), **hdf5plugin.Blosc2())
        f.create_dataset("plain", data=data)
    with h5py.File(path, "r") as f:
        assert ChunkDecoder.for_dataset(f["blosc2"]) is None  # left to HDF5
        assert ChunkDecoder.for_dataset(f["plain"]) is None
        decoder = ChunkDecoder.for_dataset(f["zstd"])
        skipped, stored = f["zstd"].id.read_direct_chunk((0, 0, 0, 0))
    out = np.empty((8, *data.shape[1:]), dtype=np.uint8)
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0x40
    with pytest.raises(DamagedChunk, match="checksum"):
        decoder.decode_into(bytes(damaged), skipped, out)
    with pytest.raises(DamagedChunk):
        decoder.decode_into(stored[:3], skipped, out)
    with pytest.raises(DamagedChunk):  # the checksum fits, the stream does not
        body = b"\x00" * 40
        value = hdf5_fletcher32(body)
        decoder.decode_into(body + value.to_bytes(4, "little"), skipped, out)


def test_damaged_blosc_chunks_are_errors_not_reads_past_the_chunk(tmp_path):
    """Without a checksum (the lz4hc setting adds one) a Blosc chunk's header is still
    checked against the stored bytes before decoding: a header claiming more bytes than
    were stored, or another chunk size, is a DamagedChunk, never a read past the buffer."""
    data = frames(16)
    path = tmp_path / "c.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(8, *data.shape[1:]),
                         **hdf5plugin.Blosc(cname="lz4hc", clevel=9))  # fmt: skip
    with h5py.File(path, "r") as f:
        decoder = ChunkDecoder.for_dataset(f["x"])
        skipped, stored = f["x"].id.read_direct_chunk((0, 0, 0, 0))
    out = np.empty((8, *data.shape[1:]), dtype=np.uint8)
    decoder.decode_into(stored, skipped, out)
    np.testing.assert_array_equal(out, data[:8])
    for cut in (3, 15, len(stored) - 1):  # truncated: the header says more than is there
        with pytest.raises(DamagedChunk, match="blosc"):
            decoder.decode_into(stored[:cut], skipped, out)
    bigger = bytearray(stored)
    bigger[4:8] = (out.nbytes * 2).to_bytes(4, "little")  # claims a chunk twice the size
    with pytest.raises(DamagedChunk, match="blosc"):
        decoder.decode_into(bytes(bigger), skipped, out)


def test_zstd_content_size_of_real_frames():
    from numcodecs import Zstd

    from demoset.loader.chunk_codec import zstd_content_size

    for size in (0, 1, 255, 256, 300, 65_791, 70_000, 1 << 20):
        frame = Zstd(level=1).encode(np.zeros(size, dtype=np.uint8).tobytes())
        assert zstd_content_size(frame) == size
    assert zstd_content_size(b"not a zstd frame") is None
