"""Cache "all" with `cache_compressed=True`: compressed image chunks held in shared RAM.

Files written by `demoset compress` (zstd + Fletcher-32, chunks of several frames) give the
same batches as the raw file in every window setting, through real DataLoader workers that
share the one buffer; the RAM held is about the chunks' stored bytes; a damaged chunk is
named (at load where it carries a checksum, at the first batch needing it where it does
not); storage demoset does not decode itself (Blosc2) is cached raw as before.
"""

from __future__ import annotations

import shutil
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.multiprocessing  # noqa: F401 - registers the shared-memory reductions

import demoset.memory
from demoset.compress import compress_file
from demoset.errors import ConfigError, DemosetError, InsufficientMemoryError, LayoutError
from demoset.format import DatasetWriter
from demoset.loader import SequenceDataset
from demoset.loader.chunk_codec import ChunkDecoder
from demoset.loader.chunk_pair import ChunkPair
from demoset.loader.ram_chunks import RamChunks

from tests.format.test_compression import damage_chunk
from tests.helpers import LIFT_ENV
from tests.loader import test_loader_compressed
from tests.loader.test_loader_robomimic import assert_same
from tests.loader.test_loader_workers import assert_batches_equal, batches

OBS = test_loader_compressed.OBS
CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")
EXAMPLE = str(Path(__file__).parents[2] / "examples" / "lift_example.hdf5")


files = test_loader_compressed.files
"""The raw file (4 demos, 12x12 random images) and its zstd:9:8, lz4hc:9:8 and blosc2-zstd:5:16
copies."""


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """The bundled example's real robosuite renders, compressed with the default setting."""
    out = str(tmp_path_factory.mktemp("renders") / "lift_zstd.hdf5")
    compress_file(EXAMPLE, out)
    return out


def pair(raw: str, compressed: str, **kwargs) -> tuple[SequenceDataset, SequenceDataset]:
    """The raw file cached raw, the compressed file cached as chunks."""
    kwargs = dict(cache_mode="all", stats_cache=False, **kwargs)
    a = SequenceDataset(raw, OBS, ["actions"], **kwargs)
    b = SequenceDataset(compressed, OBS, ["actions"], cache_compressed=True, **kwargs)
    return a, b


WINDOWS = {
    "padded": dict(seq_length=10, frame_stack=2),
    "unpadded": dict(seq_length=6, frame_stack=3, pad_seq_length=False, pad_frame_stack=False),
    "goal_last": dict(seq_length=5, goal_mode="last", get_pad_mask=True),
    "no_next_obs": dict(seq_length=4, frame_stack=2, load_next_obs=False),
    "separate_next_obs": dict(seq_length=8, next_obs_views=False),
}


@pytest.mark.parametrize("case", list(WINDOWS))
def test_same_batches_as_the_raw_file(files, case):
    a, b = pair(files["raw"], files["zstd:9:8"], **WINDOWS[case])
    check_same_batches(a, b)


def test_lz4hc_chunks_held_and_decoded_too(files):
    a, b = pair(files["raw"], files["lz4hc:9:8"], **WINDOWS["padded"])
    check_same_batches(a, b)


def check_same_batches(a: SequenceDataset, b: SequenceDataset) -> None:
    for key in CAMERAS:
        assert isinstance(b._layout.arrays[f"obs/{key}"], RamChunks)
    assert len(a) == len(b)
    rng = np.random.default_rng(0)
    for idx in [np.arange(len(a)), *rng.integers(0, len(a), (6, 16))]:
        assert_same(b.get_batch(idx), a.get_batch(idx))
    assert_same(b[3], a[3])


def test_each_chunk_decoded_once_per_batch(files, monkeypatch):
    """12 windows of 4 frames in the first demo touch frames 0-14: two chunks of 8, each
    decoded once for the batch (not once per window)."""
    kwargs = dict(cache_mode="all", stats_cache=False, load_next_obs=False, seq_length=4)
    ds = SequenceDataset(files["zstd:9:8"], ["agentview_image"], cache_compressed=True, **kwargs)
    decoded = []
    real = ChunkDecoder.decode_into

    def counting(self, stored, skipped, out):
        decoded.append(len(stored))
        return real(self, stored, skipped, out)

    monkeypatch.setattr(ChunkDecoder, "decode_into", counting)
    batch = ds.get_batch(np.arange(12))
    monkeypatch.undo()
    assert len(decoded) == 2, decoded
    ref = SequenceDataset(files["raw"], ["agentview_image"], **kwargs)
    assert_same(batch, ref.get_batch(np.arange(12)))


def test_workers_share_one_buffer(files):
    """Forked and spawned DataLoader workers give the main process's batches; a spawned
    worker receives the buffer as a shared-memory handle (the pickled dataset is small)."""
    ds = SequenceDataset(
        files["zstd:9:8"],
        OBS,
        frame_stack=2,
        seq_length=4,
        goal_mode="last",
        cache_mode="all",
        cache_compressed=True,
    )
    chunks = ds._layout.arrays["obs/agentview_image"]
    assert chunks._owner.is_shared() and chunks.used > 10_000
    pickled = len(ForkingPickler.dumps(ds))
    assert pickled < ds.cached_bytes / 4, (pickled, ds.cached_bytes)
    main = batches(ds, 0)
    assert_batches_equal(batches(ds, 2), main)
    assert_batches_equal(batches(ds, 2, context="spawn"), main)


def test_ram_held_is_the_stored_obs_chunks(renders):
    """Real renders: the RAM held for an image key is its obs chunks' stored bytes plus one
    raw frame per demo (next_obs is obs one step on), several times less than the raw
    "all" cache of the same frames (which holds obs and next_obs once, too)."""
    a, b = pair(EXAMPLE, renders, seq_length=10)
    with h5py.File(renders, "r") as f:
        stored = sum(
            f[f"data/{demo}/obs/{key}"].id.get_storage_size()
            for demo in f["data"]
            for key in CAMERAS
        )
        frames = sum(f[f"data/{demo}/actions"].shape[0] for demo in f["data"])
    tails = len(b.demos) * len(CAMERAS) * 84 * 84 * 3
    pairs = [p for p in b._layout.storage if isinstance(p, ChunkPair)]
    assert len(pairs) == 2 and all((p.own_index == -1).all() and not p.own.demos for p in pairs)
    held = sum(p.nbytes for p in pairs)
    assert stored + tails <= held < (stored + tails) * 1.02
    raw_images = 2 * 2 * frames * 84 * 84 * 3  # two cameras, obs and next_obs
    assert b.cached_bytes < a.cached_bytes / 4 and held < raw_images / 8
    rng = np.random.default_rng(2)
    for idx in rng.integers(0, len(a), (4, 16)):
        assert_same(b.get_batch(idx), a.get_batch(idx))


def test_demo_whose_next_obs_is_not_obs_one_step_on(tmp_path):
    """A demo that breaks the rule holds its own next_obs chunks; the others share obs."""
    rng = np.random.default_rng(5)
    raw, comp = str(tmp_path / "raw.hdf5"), str(tmp_path / "comp.hdf5")
    with DatasetWriter(raw, env_meta=LIFT_ENV) as w:
        for n in (19, 25, 13):
            obs = {"agentview_image": rng.integers(0, 256, (n, 10, 10, 3), dtype=np.uint8)}
            if n == 25:
                nxt = {"agentview_image": rng.integers(0, 256, (n, 10, 10, 3), dtype=np.uint8)}
                w.add_demo(actions=np.zeros((n, 2)), obs=obs, next_obs=nxt)
            else:
                w.add_demo(actions=np.zeros((n, 2)), obs=obs, derive_next_obs=True)
    compress_file(raw, comp, "zstd:9:8")
    kwargs = dict(cache_mode="all", stats_cache=False, seq_length=6, frame_stack=2)
    a = SequenceDataset(raw, ["agentview_image"], goal_mode="last", **kwargs)
    b = SequenceDataset(
        comp, ["agentview_image"], goal_mode="last", cache_compressed=True, **kwargs
    )
    [chunks] = [p for p in b._layout.storage if isinstance(p, ChunkPair)]
    assert chunks.own_index.tolist() == [-1, 0, -1] and chunks.own.demos == ["demo_1"]
    everything = np.arange(len(a))
    assert_same(b.get_batch(everything), a.get_batch(everything))
    for idx in rng.integers(0, len(a), (6, 8)):
        assert_same(b.get_batch(idx), a.get_batch(idx))


def test_memory_check_counts_the_stored_chunks(renders, monkeypatch):
    """Memory that does not hold the raw frames but holds the chunks: refused raw, accepted
    compressed."""
    b = SequenceDataset(renders, OBS, cache_mode="all", cache_compressed=True)
    need = b.cached_bytes
    monkeypatch.setattr(demoset.memory, "available_bytes", lambda: int(need * 2))
    with pytest.raises(InsufficientMemoryError, match="cache_mode='all'"):
        SequenceDataset(renders, OBS, cache_mode="all")
    ds = SequenceDataset(renders, OBS, cache_mode="all", cache_compressed=True)
    assert ds.cached_bytes == need
    monkeypatch.setattr(demoset.memory, "available_bytes", lambda: int(need / 2))
    with pytest.raises(InsufficientMemoryError, match="cache_compressed=True"):
        SequenceDataset(renders, OBS, cache_mode="all", cache_compressed=True)


@pytest.mark.parametrize("group", ["obs", "next_obs"])
def test_damaged_chunk_refused_at_load(files, tmp_path, group):
    """zstd chunks carry a Fletcher-32 checksum, checked as each chunk is loaded: the
    dataset is refused when made, naming demo, key and frames."""
    path = str(tmp_path / "damaged.hdf5")
    shutil.copyfile(files["zstd:9:8"], path)
    damage_chunk(path, f"data/demo_1/{group}/agentview_image", 1)  # frames 8-15
    with pytest.raises(DemosetError) as err:
        SequenceDataset(path, OBS, cache_mode="all", cache_compressed=True)
    msg = str(err.value)
    assert f"/data/demo_1/{group}/agentview_image" in msg and "frames 8-15" in msg, msg
    assert "checksum" in msg, msg


def test_damaged_chunk_without_checksum_named_at_first_batch(files, tmp_path):
    """deflate chunks have no checksum: the damage shows when a batch first decodes the
    chunk, as an error naming demo, key and frames."""
    path = str(tmp_path / "gzip.hdf5")
    compress_file(files["raw"], path, "gzip:4:8")
    damage_chunk(path, "data/demo_0/obs/agentview_image", 1)  # frames 8-15
    kwargs = dict(cache_mode="all", load_next_obs=False, stats_cache=False, seq_length=4)
    ds = SequenceDataset(path, ["agentview_image"], cache_compressed=True, **kwargs)
    assert isinstance(ds._layout.arrays["obs/agentview_image"], RamChunks)
    ds.get_batch(np.arange(4))  # frames 0-6: chunk 0, intact
    with pytest.raises(LayoutError) as err:
        ds.get_batch(np.arange(12))
    msg = str(err.value)
    assert "/data/demo_0/obs/agentview_image" in msg and "frames 8-15" in msg, msg


def test_blosc2_file_is_cached_raw(files):
    """Filters demoset does not decode itself keep the raw "all" cache: same batches."""
    a, b = pair(files["raw"], files["blosc2-zstd:5:16"], seq_length=10)
    assert not any(isinstance(x, RamChunks) for x in b._layout.arrays.values())
    assert b.cached_bytes == a.cached_bytes
    for idx in np.random.default_rng(3).integers(0, len(a), (4, 16)):
        assert_same(b.get_batch(idx), a.get_batch(idx))


def test_refresh_adds_demos_and_holds_undecodable_ones_raw(files, tmp_path):
    """Follow mode: demos appended later are added to the buffer; one stored with a filter
    demoset does not decode (Blosc2) is held raw among the compressed ones."""
    raw, comp = str(tmp_path / "raw.hdf5"), str(tmp_path / "comp.hdf5")
    shutil.copyfile(files["raw"], raw)
    shutil.copyfile(files["zstd:9:8"], comp)
    a, b = pair(raw, comp, seq_length=5, goal_mode="last")
    rng = np.random.default_rng(4)
    for path, spec in ((raw, None), (comp, "blosc2-zstd:5:16")):
        with DatasetWriter(path, mode="a", image_compression=spec) as w:
            images = rng.integers(0, 256, (2, 21, 12, 12, 3), dtype=np.uint8)
            w.add_demo(
                actions=np.zeros((21, 7)),
                obs={
                    "robot0_eef_pos": np.ones((21, 3), np.float32),
                    "agentview_image": images[0],
                    "robot0_eye_in_hand_image": images[1],
                },
                derive_next_obs=True,
            )
        rng = np.random.default_rng(4)  # the same demo in both files
    assert a.refresh() == b.refresh() == 1
    with h5py.File(comp, "r") as f:
        assert f["data/demo_4/obs/agentview_image"].chunks[0] == 16  # Blosc2's chunks
    assert_same(b.get_batch(np.arange(len(a))), a.get_batch(np.arange(len(a))))


@pytest.mark.parametrize("cache_mode", ["low_dim", None])
def test_cache_compressed_needs_cache_mode_all(files, cache_mode):
    with pytest.raises(ConfigError, match="cache_mode='all'"):
        SequenceDataset(files["zstd:9:8"], OBS, cache_mode=cache_mode, cache_compressed=True)


def test_damaged_chunk_error_is_raised_in_a_worker_too(files, tmp_path):
    """A batch decoded in a DataLoader worker reports a damaged chunk the same way."""
    path = str(tmp_path / "gzip.hdf5")
    compress_file(files["raw"], path, "gzip:4:8")
    damage_chunk(path, "data/demo_0/obs/agentview_image", 0)
    ds = SequenceDataset(
        path, ["agentview_image"], cache_mode="all", cache_compressed=True, load_next_obs=False
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds), num_workers=1)
    with pytest.raises(Exception, match="demo_0/obs/agentview_image"):
        next(iter(loader))
