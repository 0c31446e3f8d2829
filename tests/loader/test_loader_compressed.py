"""Compressed image files through both loaders: the same samples as the uncompressed file.

robomimic 0.3.0 (after `import hdf5plugin`, which demoset's reader does) reads a file
written by `demoset compress` index by index like the original; demoset's loader gives
the same batches in every cache mode, and decodes each chunk once per batch.
"""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401 - what a robomimic user adds to read these files
import numpy as np
import pytest

from demoset.compress import compress_file
from demoset.loader import SequenceDataset
from demoset.loader.chunk_codec import ChunkDecoder

from tests.helpers import write_dataset
from tests.loader.test_loader_robomimic import assert_same, robomimic_samples

OBS = ["robot0_eef_pos", "agentview_image", "robot0_eye_in_hand_image"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("compressed")
    raw = write_dataset(
        root / "raw.hdf5",
        n_demos=4,
        min_len=12,
        max_len=30,
        low_dim={"robot0_eef_pos": 3},
        cameras=("agentview", "robot0_eye_in_hand"),
        image_size=12,
    )
    out = {"raw": raw}
    for spec in ("zstd:9:8", "lz4hc:9:8", "blosc2-zstd:5:16"):
        out[spec] = str(root / f"{spec.replace(':', '_')}.hdf5")
        compress_file(raw, out[spec], spec, verify=True)
    return out


@pytest.mark.parametrize("spec", ["zstd:9:8", "lz4hc:9:8", "blosc2-zstd:5:16"])
def test_robomimic_reads_compressed_like_raw(files, spec):
    with h5py.File(files[spec], "r") as f:
        assert f["data/demo_0/obs/agentview_image"].chunks[0] > 1
    kwargs = dict(seq_length=10, frame_stack=2, pad_seq_length=True, pad_frame_stack=True)
    ref, _ = robomimic_samples(files["raw"], OBS, ["actions"], **kwargs)
    got, _ = robomimic_samples(files[spec], OBS, ["actions"], **kwargs)
    assert len(ref) == len(got) > 0
    for i, (a, b) in enumerate(zip(got, ref)):
        assert_same(a, b, f"index {i}")


@pytest.mark.parametrize("cache_mode", ["low_dim", None, "all"])
@pytest.mark.parametrize("swmr", [True, False])
@pytest.mark.parametrize("spec", ["zstd:9:8", "lz4hc:9:8"])
def test_demoset_loader_same_batches(files, cache_mode, swmr, spec):
    kwargs = dict(seq_length=10, pad_seq_length=True, cache_mode=cache_mode, stats_cache=False)
    a = SequenceDataset(files["raw"], OBS, ["actions"], swmr=swmr, **kwargs)
    b = SequenceDataset(files[spec], OBS, ["actions"], swmr=swmr, **kwargs)
    assert len(a) == len(b)
    rng = np.random.default_rng(0)
    for idx in [np.arange(len(a)), *rng.integers(0, len(a), (5, 16))]:
        assert_same(b.get_batch(idx), a.get_batch(idx))


@pytest.mark.parametrize("spec", ["zstd:9:8", "lz4hc:9:8", "blosc2-zstd:5:16"])
def test_each_chunk_decoded_once_per_batch(files, spec, monkeypatch):
    """Windows that share chunks: each chunk decoded once per batch, not once per window
    (decoded by demoset from its stored bytes for zstd and Blosc's lz4hc, by HDF5 in runs
    for Blosc2)."""
    kwargs = dict(seq_length=4, cache_mode="low_dim", stats_cache=False, load_next_obs=False)
    ds = SequenceDataset(files[spec], ["agentview_image"], ["actions"], **kwargs)
    decoded, reads = [], []
    real_decode, real_read = ChunkDecoder.decode_into, h5py.Dataset.read_direct

    def counting_decode(self, stored, skipped, out):
        decoded.append(len(stored))
        return real_decode(self, stored, skipped, out)

    def counting_read(self, dest, source_sel=None, dest_sel=None):
        if source_sel is not None:
            reads.append(source_sel)
        return real_read(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(ChunkDecoder, "decode_into", counting_decode)
    monkeypatch.setattr(h5py.Dataset, "read_direct", counting_read)
    batch = ds.get_batch(np.arange(12))  # 12 windows in the first demo: frames 0-14
    monkeypatch.undo()
    if spec.startswith(("zstd", "lz4hc")):
        assert len(decoded) == 2 and not reads, (decoded, reads)  # chunks 0-7 and 8-15
    else:
        assert not decoded and len(reads) == 1, (decoded, reads)  # one run: chunk 0
    ref = SequenceDataset(files["raw"], ["agentview_image"], ["actions"], **kwargs)
    assert_same(batch, ref.get_batch(np.arange(12)))


@pytest.mark.parametrize("cache_mode", ["low_dim", None])
def test_obs_and_next_obs_decoded_once_with_padding(files, cache_mode, monkeypatch):
    """Padded batches too: next_obs is taken from obs one step on (one decode per chunk)."""
    kwargs = dict(seq_length=10, frame_stack=3, pad_seq_length=True, pad_frame_stack=True)
    kwargs.update(cache_mode=cache_mode, stats_cache=False)
    ds = SequenceDataset(files["zstd:9:8"], OBS, ["actions"], **kwargs)
    ref = SequenceDataset(files["raw"], OBS, ["actions"], **kwargs)
    decoded = []
    real_decode = ChunkDecoder.decode_into

    def counting_decode(self, stored, skipped, out):
        decoded.append(1)
        return real_decode(self, stored, skipped, out)

    monkeypatch.setattr(ChunkDecoder, "decode_into", counting_decode)
    everything = np.arange(len(ds))
    got = ds.get_batch(everything)
    first_pass = len(decoded)  # includes reading each demo whole once to check the rule
    decoded.clear()
    again = ds.get_batch(everything)
    monkeypatch.undo()
    with h5py.File(files["zstd:9:8"], "r") as f:
        chunks = sum(
            f[f"data/{d}/obs/{k}"].id.get_num_chunks()
            for d in f["data"]
            for k in ("agentview_image", "robot0_eye_in_hand_image")
        )
    assert len(decoded) <= chunks + 2 * len(ds.demos), (len(decoded), chunks)
    assert first_pass > 0
    assert_same(got, ref.get_batch(everything))
    assert_same(again, got)
    rng = np.random.default_rng(1)
    for idx in rng.integers(0, len(ds), (6, 16)):
        assert_same(ds.get_batch(idx), ref.get_batch(idx))


@pytest.mark.parametrize("spec", ["zstd:9:8", "lz4hc:9:8"])
def test_each_chunks_checksum_checked_once_per_process(files, spec, monkeypatch):
    """The first batch needing a chunk checks its Fletcher-32 checksum; later batches
    read it without (a committed chunk never changes) and still give the same frames."""
    from demoset.loader import chunk_codec

    kwargs = dict(seq_length=4, cache_mode="low_dim", stats_cache=False, load_next_obs=False)
    ds = SequenceDataset(files[spec], ["agentview_image"], ["actions"], **kwargs)
    ref = SequenceDataset(files["raw"], ["agentview_image"], ["actions"], **kwargs)
    checks = []
    real_checked = chunk_codec.checked

    def counting_checked(data):
        checks.append(len(data))
        return real_checked(data)

    monkeypatch.setattr(chunk_codec, "checked", counting_checked)
    everything = np.arange(len(ds))
    first = ds.get_batch(everything)
    with h5py.File(files[spec], "r") as f:
        chunks = sum(f[f"data/{d}/obs/agentview_image"].id.get_num_chunks() for d in f["data"])
    assert len(checks) == chunks, (len(checks), chunks)
    checks.clear()
    again = ds.get_batch(everything[::-1])
    assert not checks
    assert_same(first, ref.get_batch(everything))
    assert_same(again, ref.get_batch(everything[::-1]))


def test_final_next_obs_frames_decoded_once_per_process(files, monkeypatch):
    """A window reaching its demo's end needs next_obs's final frame, a chunk of its own:
    decoded the first time, then kept (and the batches stay those of the raw file)."""
    from demoset.loader.arrays import FileArray

    kwargs = dict(seq_length=5, cache_mode=None, stats_cache=False)
    ds = SequenceDataset(files["zstd:9:8"], OBS, ["actions"], **kwargs)
    ref = SequenceDataset(files["raw"], OBS, ["actions"], **kwargs)
    reads = []
    real = FileArray.gather_frames

    def counting(self, flat, demo, step, plan):
        if self.key.startswith("next_obs/"):
            reads.append((self.key, len(demo)))
        return real(self, flat, demo, step, plan)

    monkeypatch.setattr(FileArray, "gather_frames", counting)
    everything = np.arange(len(ds))
    first = ds.get_batch(everything)
    assert reads  # every demo's final frame, once per camera
    assert sum(n for _, n in reads) == 2 * len(ds.demos), reads
    reads.clear()
    again = ds.get_batch(everything[::-1])
    assert not reads
    assert_same(first, ref.get_batch(everything))
    assert_same(again, ref.get_batch(everything[::-1]))
