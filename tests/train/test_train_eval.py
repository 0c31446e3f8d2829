"""`demoset eval` and rollouts during training, in the real robosuite Lift environment."""

from __future__ import annotations

import json
import os

import imageio
import pytest
import torch

from demoset.cli.main import main
from demoset.train.config import template
from demoset.train.trainer import Trainer

pytestmark = pytest.mark.sim


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_eval_rolls_out_checkpoint_with_video(make_dataset, tmp_path, capsys):
    # Lift's observation names and sizes, so the policy can act in the real environment
    data = make_dataset(
        n_demos=3, low_dim={"robot0_eef_pos": 3, "robot0_gripper_qpos": 2, "object": 10}
    )
    cfg = template("bc_rnn")
    cfg["observation"]["modalities"]["obs"]["low_dim"] = [
        "robot0_eef_pos",
        "robot0_gripper_qpos",
        "object",
    ]
    cfg["experiment"]["epoch_every_n_steps"] = 3
    cfg["experiment"]["rollout"].update(enabled=True, n=1, horizon=4, rate=1)
    cfg["experiment"]["render_video"] = False
    cfg["train"].update(batch_size=8, num_epochs=1, seq_length=4)
    cfg["algo"]["rnn"].update(hidden_dim=16, horizon=4)
    result = Trainer(cfg, dataset=data, output_dir=str(tmp_path), name="ev").run()
    rollout = result.history[0]["rollout"]
    assert rollout["mean_length"] == 4 and 0.0 <= rollout["success_rate"] <= 1.0
    assert os.path.exists(tmp_path / "ev" / "models" / "best_success.pth")

    video = tmp_path / "out.mp4"
    code = main(
        [
            "eval",
            "--checkpoint",
            result.last_checkpoint,
            "--episodes",
            "2",
            "--horizon",
            "6",
            "--video",
            str(video),
            "--video-size",
            "48",
            "--video-skip",
            "2",
            "--seed",
            "0",
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 2 and len(summary["returns"]) == 2
    assert summary["mean_length"] <= 6 and summary["video"] == str(video)
    reader = imageio.get_reader(str(video))
    frames = [f for f in reader.iter_data()]
    reader.close()
    lengths = [6 if not s else None for s in summary["successes"]]
    if None not in lengths:  # a random policy does not lift the cube in 6 steps
        assert len(frames) == 2 * 3  # steps 0, 2, 4 of each episode
    assert frames[0].shape == (48, 48, 3)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary files

    # a checkpoint that is not one is a one-line error with exit code 2
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["eval", "--checkpoint", str(bogus), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "bogus.pth" in err and len(err.strip().splitlines()) == 1


def test_image_policy_acts_on_rendered_camera_frames(make_dataset, tmp_path):
    """A camera policy gets the environment's own rendered frames at its trained size."""
    from demoset.train.checkpoint import algo_from_checkpoint, load_checkpoint
    from demoset.train.rollout import run_rollouts

    data = make_dataset(
        n_demos=2, low_dim={"robot0_eef_pos": 3}, cameras=("agentview",), image_size=24
    )
    cfg = template("bc")
    cfg["observation"]["modalities"]["obs"]["low_dim"] = ["robot0_eef_pos"]
    cfg["observation"]["modalities"]["obs"]["rgb"] = ["agentview_image"]
    cfg["observation"]["encoder"]["rgb"]["obs_randomizer_class"] = "CropRandomizer"
    cfg["observation"]["encoder"]["rgb"]["obs_randomizer_kwargs"].update(
        crop_height=20, crop_width=20
    )
    cfg["experiment"]["epoch_every_n_steps"] = 1
    cfg["train"].update(batch_size=4, num_epochs=1, hdf5_cache_mode="low_dim")
    cfg["algo"]["actor_layer_dims"] = [16]
    result = Trainer(cfg, dataset=data, output_dir=str(tmp_path), name="img").run()
    algo = algo_from_checkpoint(load_checkpoint(result.last_checkpoint))
    seen = []
    get_action = algo.get_action

    def spy(obs, goal=None):
        seen.append(obs["agentview_image"])
        return get_action(obs, goal)

    algo.get_action = spy
    res = run_rollouts(
        algo, load_checkpoint(result.last_checkpoint)["env_meta"], 1, horizon=3, seed=1
    )
    assert res.episodes[0].length == 3 and len(seen) == 3
    assert seen[0].shape == (24, 24, 3) and seen[0].dtype.name == "uint8" and seen[0].std() > 0
