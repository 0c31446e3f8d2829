"""Data-parallel training: two gloo processes under torchrun end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from demoset.train.config import template

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from demoset.train.trainer import Trainer

    cfg = json.load(open(sys.argv[1]))
    trainer = Trainer(cfg, dataset=sys.argv[2], output_dir=sys.argv[3], name="ddp")
    result = trainer.run()
    rank = int(os.environ["RANK"])
    torch.save(trainer.algo.net.state_dict(), os.path.join(sys.argv[3], f"rank{rank}.pt"))
    losses = [h["train"]["action_loss"] for h in result.history]
    json.dump({"world": trainer.dist.world_size, "losses": losses}, open(os.path.join(sys.argv[3], f"rank{rank}.json"), "w"))
    """
)


def test_two_gloo_processes_end_with_identical_weights(make_dataset, tmp_path):
    data = make_dataset(n_demos=4, low_dim={"robot0_eef_pos": 3, "object": 10})
    cfg = template("bc_rnn")
    cfg["observation"]["modalities"]["obs"]["low_dim"] = ["robot0_eef_pos", "object"]
    cfg["experiment"]["epoch_every_n_steps"] = 4
    cfg["train"].update(batch_size=8, num_epochs=2, seq_length=4, cuda=False)
    cfg["algo"]["rnn"].update(hidden_dim=16, horizon=4)
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(tmp_path / "worker.py"), str(tmp_path / "c.json"), data, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    r0 = json.loads((out / "rank0.json").read_text())
    r1 = json.loads((out / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert r0["losses"] != r1["losses"]  # each process trained on its own share of the batches
    # only rank 0 wrote the run directory's checkpoint, and it holds the shared weights
    ckpt = torch.load(out / "ddp" / "models" / "last.pth", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)
