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
    for spec in ("zstd:9:8", "blosc2-zstd:5:16"):
        out[spec] = str(root / f"{spec.replace(':', '_')}.hdf5")
        compress_file(raw, out[spec], spec, verify=True)
    return out


@pytest.mark.parametrize("spec", ["zstd:9:8", "blosc2-zstd:5:16"])
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
def test_demoset_loader_same_batches(files, cache_mode, swmr):
    kwargs = dict(seq_length=10, pad_seq_length=True, cache_mode=cache_mode, stats_cache=False)
    a = SequenceDataset(files["raw"], OBS, ["actions"], swmr=swmr, **kwargs)
    b = SequenceDataset(files["zstd:9:8"], OBS, ["actions"], swmr=swmr, **kwargs)
    assert len(a) == len(b)
    rng = np.random.default_rng(0)
    for idx in [np.arange(len(a)), *rng.integers(0, len(a), (5, 16))]:
        assert_same(b.get_batch(idx), a.get_batch(idx))


def test_each_chunk_decoded_once_per_batch(files, monkeypatch):
    """Windows that share chunks: one h5py read per run of chunks, not one per window."""
    ds = SequenceDataset(
        files["zstd:9:8"],
        ["agentview_image"],
        ["actions"],
        seq_length=4,
        cache_mode="low_dim",
        stats_cache=False,
        load_next_obs=False,
    )
    calls = []
    real = h5py.Dataset.read_direct

    def counting(self, dest, source_sel=None, dest_sel=None):
        calls.append(source_sel)
        return real(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(h5py.Dataset, "read_direct", counting)
    batch = ds.get_batch(np.arange(12))  # 12 windows in the first demo: chunks 0-1 (+2)
    reads = [c for c in calls if c is not None]
    assert 1 <= len(reads) <= 2, reads
    ref = SequenceDataset(
        files["raw"],
        ["agentview_image"],
        ["actions"],
        seq_length=4,
        cache_mode="low_dim",
        stats_cache=False,
        load_next_obs=False,
    )
    monkeypatch.undo()
    assert_same(batch, ref.get_batch(np.arange(12)))
