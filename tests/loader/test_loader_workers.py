"""The loader in other processes: DataLoader workers (forked and spawned) and torch.distributed.

Cached arrays live in shared memory and file reads reopen per process, so worker processes
must give exactly the batches the main process gives; two distributed ranks must split a
DistributedSampler's indices into disjoint shards covering the dataset.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from demoset.loader import MetaDataset, SequenceDataset, collate

from tests.helpers import write_dataset

OBS_KEYS = ["robot0_eef_pos", "object", "agentview_image"]


@pytest.fixture
def image_file(tmp_path):
    return write_dataset(
        tmp_path / "w.hdf5", n_demos=5, min_len=8, max_len=20, cameras=("agentview",)
    )


def batches(ds, num_workers: int, collate_fn=collate, context=None) -> list:
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=7,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        num_workers=num_workers,
        collate_fn=collate_fn,
        multiprocessing_context=context,
    )
    return list(loader)


def assert_batches_equal(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        _equal(x, y)


def _equal(x, y, path=""):
    if isinstance(x, dict):
        assert set(x) == set(y), path
        for k in x:
            _equal(x[k], y[k], f"{path}/{k}")
        return
    assert x.dtype == y.dtype and x.shape == y.shape, path
    assert torch.equal(x, y), path


@pytest.mark.parametrize("cache_mode", ["low_dim", "all"])
def test_two_forked_workers_give_the_same_batches(image_file, cache_mode):
    ds = SequenceDataset(
        image_file,
        OBS_KEYS,
        frame_stack=2,
        seq_length=4,
        get_pad_mask=True,
        goal_mode="last",
        cache_mode=cache_mode,
    )
    main = batches(ds, 0)
    assert sum(len(b["index"]) for b in main) == len(ds)
    assert_batches_equal(batches(ds, 2), main)
    # torch's default collate stacks the per-sample dicts of a SampleBatch: same batches
    assert_batches_equal(batches(ds, 2, collate_fn=None), main)


@pytest.mark.parametrize("cache_mode", ["low_dim", "all"])
def test_two_spawned_workers_give_the_same_batches(image_file, cache_mode):
    """Spawned workers unpickle the dataset: shared arrays travel as handles, not copies
    (with "all", images whose obs and next_obs are held once too)."""
    ds = SequenceDataset(image_file, OBS_KEYS, seq_length=3, cache_mode=cache_mode)
    assert_batches_equal(batches(ds, 2, context="spawn"), batches(ds, 0))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from demoset.loader import MetaDataset, SequenceDataset, collate

    rank, port, paths, out = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    datasets = [SequenceDataset(p, ["object", "agentview_image"], seq_length=3) for p in paths]
    meta = MetaDataset(datasets)
    sampler = torch.utils.data.DistributedSampler(meta, num_replicas=2, rank=rank, shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(meta, batch_size=5, sampler=sampler, collate_fn=collate)
    seen, sums = [], []
    for batch in loader:
        seen += batch["index"].tolist()
        sums += batch["obs"]["object"].double().sum(dim=(1, 2)).tolist()
    shards = [None, None]
    dist.all_gather_object(shards, seen)
    if rank == 0:
        with open(out, "w") as fh:
            json.dump({"shards": shards, "len": len(meta)}, fh)
    with open(out + f".{rank}", "w") as fh:
        json.dump({"index": seen, "sums": sums}, fh)
    dist.destroy_process_group()
    """
)


def test_distributed_ranks_get_disjoint_shards_covering_the_dataset(tmp_path):
    paths = [
        write_dataset(tmp_path / "a.hdf5", n_demos=3, cameras=("agentview",), seed=1),
        write_dataset(tmp_path / "b.hdf5", n_demos=3, cameras=("agentview",), seed=2),
    ]
    meta = MetaDataset(
        [SequenceDataset(p, ["object", "agentview_image"], seq_length=3) for p in paths]
    )
    n = len(meta)
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = str(tmp_path / "result.json")
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), port, json.dumps(paths), out],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    result = json.loads(open(out).read())
    assert result["len"] == n
    a, b = (set(s) for s in result["shards"])
    per_rank = -(-n // 2)
    assert len(result["shards"][0]) == len(result["shards"][1]) == per_rank
    # DistributedSampler pads an odd total with one repeated index; otherwise disjoint
    assert len(a & b) == 2 * per_rank - n
    assert a | b == set(range(n))
    # every rank read the right data for the indices it got
    for rank in (0, 1):
        got = json.loads(open(f"{out}.{rank}").read())
        expected = meta.get_batch(got["index"])["obs"]["object"].astype(np.float64).sum(axis=(1, 2))
        np.testing.assert_allclose(got["sums"], expected, rtol=1e-12)
