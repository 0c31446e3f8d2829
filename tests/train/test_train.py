"""`demoset train` / `demoset config`: BC learns, checkpoints reload safely, resume is exact."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from demoset.cli.main import main
from demoset.errors import ConfigError, FilterKeyError
from demoset.train.checkpoint import algo_from_checkpoint, load_checkpoint
from demoset.train.config import load_config, make_config, template
from demoset.train.trainer import Trainer

LOW_DIM = {"robot0_eef_pos": 3, "object": 10}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the tests run beside others (pytest -n 2) on a 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(algo: str = "bc", **train) -> dict:
    cfg = template(algo)
    cfg["observation"]["modalities"]["obs"]["low_dim"] = ["robot0_eef_pos", "object"]
    cfg["experiment"]["epoch_every_n_steps"] = 10
    cfg["experiment"]["save"]["every_n_epochs"] = 2
    cfg["train"].update({"batch_size": 16, "num_epochs": 3, "hdf5_normalize_obs": True, **train})
    cfg["algo"]["actor_layer_dims"] = [64, 64]
    cfg["algo"]["rnn"]["hidden_dim"] = 32
    cfg["algo"]["optim_params"]["policy"]["learning_rate"]["initial"] = 1e-3
    return cfg


def write_config(path, cfg: dict) -> str:
    with open(path, "w") as fh:
        json.dump(cfg, fh)
    return str(path)


def test_bc_loss_falls_and_checkpoint_reloads(make_dataset, tmp_path):
    data = make_dataset(n_demos=5, low_dim=LOW_DIM)
    cfg = small_config(num_epochs=6, action_normalization="min_max")
    cfg["algo"]["actor_layer_dims"] = [256, 256]
    result = Trainer(cfg, dataset=data, output_dir=str(tmp_path / "runs"), name="bc").run()
    losses = [h["train"]["action_loss"] for h in result.history]
    assert len(losses) == 6 and result.steps_done == 60
    # random targets, so only memorising lowers the loss: it must fall every epoch
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.7 * losses[0], losses

    run = tmp_path / "runs" / "bc"
    assert sorted(os.listdir(run / "models")) == [
        "last.pth",
        "model_epoch_2.pth",
        "model_epoch_4.pth",
        "model_epoch_6.pth",
    ]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "Train/action_loss",
        "Train/learning_rate",
        "Timing/samples_per_s",
        "Timing/time_data_s",
        "Timing/time_compute_s",
        "Timing/data_wait_fraction",
    } <= tags
    assert [e.step for e in events.Scalars("Train/action_loss")] == [1, 2, 3, 4, 5, 6]
    lines = (run / "logs" / "log.txt").read_text().splitlines()
    rec = json.loads(lines[-1])
    assert rec["epoch"] == 6 and 0.0 <= rec["train"]["data_wait_fraction"] <= 1.0
    assert rec["train"]["samples_per_s"] > 0

    # weights_only load: config, stats and env meta are plain data
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["epoch"] == 6 and ckpt["config"]["train"]["num_epochs"] == 6
    assert ckpt["env_meta"]["env_name"] == "Lift"
    assert set(ckpt["obs_normalization_stats"]) == set(LOW_DIM)
    assert len(ckpt["action_normalization_stats"]["scale"]) == 7
    json.dumps(
        {
            k: ckpt[k]
            for k in (
                "config",
                "obs_normalization_stats",
                "action_normalization_stats",
                "env_meta",
                "shape_meta",
            )
        }
    )

    algo = algo_from_checkpoint(load_checkpoint(result.last_checkpoint))
    obs = {"robot0_eef_pos": np.array([0.1, -0.2, 0.3]), "object": np.linspace(-1, 1, 10)}
    again = algo_from_checkpoint(load_checkpoint(result.last_checkpoint))
    np.testing.assert_array_equal(algo.get_action(obs), again.get_action(obs))
    # actions come back in the dataset's (un-normalised) range
    assert algo.get_action(obs).shape == (7,)


def test_resume_continues_exactly(make_dataset, tmp_path, capsys):
    """2 epochs, then --resume to 4, ends with the weights of an uninterrupted 4-epoch run."""
    data = make_dataset(n_demos=5, low_dim=LOW_DIM)
    out = str(tmp_path / "runs")
    full_cfg = write_config(tmp_path / "full.json", small_config(num_epochs=4))
    part_cfg = write_config(tmp_path / "part.json", small_config(num_epochs=2))
    args = ["train", "--dataset", data, "--output", out]
    assert main([*args, "--config", full_cfg, "--name", "full"]) == 0
    assert main([*args, "--config", part_cfg, "--name", "part"]) == 0
    # starting again under the same name without --resume is refused
    assert main([*args, "--config", part_cfg, "--name", "part"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--config", full_cfg, "--name", "part", "--resume"]) == 0
    full = torch.load(os.path.join(out, "full", "models", "last.pth"), weights_only=True)
    part = torch.load(os.path.join(out, "part", "models", "last.pth"), weights_only=True)
    assert full["epoch"] == part["epoch"] == 4 and full["step"] == part["step"] == 40
    for key, value in full["model"].items():
        assert torch.equal(value, part["model"][key]), key
    for a, b in zip(full["optimizer"]["state"].values(), part["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    log = open(os.path.join(out, "part", "logs", "log.txt")).read().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4]

    # a resumed run may not change what it trains
    other = small_config(num_epochs=4)
    other["algo"]["actor_layer_dims"] = [32]
    bad = write_config(tmp_path / "bad.json", other)
    assert main([*args, "--config", bad, "--name", "part", "--resume"]) == 2
    assert "algo.actor_layer_dims" in capsys.readouterr().err


def test_unknown_config_key_is_named(tmp_path, capsys):
    cfg = small_config()
    cfg["algo"]["rnn"]["hiden_dim"] = 10
    path = write_config(tmp_path / "c.json", cfg)
    with pytest.raises(ConfigError, match=r"unknown config key 'algo\.rnn\.hiden_dim'"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        make_config({"trian": {}})
    with pytest.raises(ConfigError, match="algo.vae.enabled"):
        make_config({"algo": {"vae": {"enabled": True}}})
    code = main(["train", "--dataset", "x.hdf5", "--config", path])
    err = capsys.readouterr().err
    assert (
        code == 2 and "hiden_dim" in err and str(path) in err and len(err.strip().splitlines()) == 1
    )


def test_robomimic_bc_template_loads():
    """robomimic 0.3.0's own bc.json (with its VAE/transformer sections) is accepted."""
    import robomimic

    path = os.path.join(os.path.dirname(robomimic.__file__), "exps", "templates", "bc.json")
    cfg = load_config(path)
    assert cfg.algo_label == "bc" and cfg["train"]["batch_size"] == 100


def test_robomimic_paper_bc_rnn_configs_load():
    """The BC-RNN configs robomimic's paper scripts generate (low-dim and image) are accepted."""
    from tests.helpers import stub_torchvision

    stub_torchvision()  # robomimic's scripts import torchvision, which does not import here
    import robomimic.scripts.generate_paper_configs as gpc
    from robomimic.config import config_factory

    for hdf5_type, modify in (
        ("low_dim", gpc.modify_config_for_default_low_dim_exp),
        ("image", gpc.modify_config_for_default_image_exp),
    ):
        rm = modify(config_factory("bc"))
        rm = gpc.modify_config_for_dataset(rm, "lift", "ph", hdf5_type, base_dataset_dir="/data")
        rm = gpc.modify_bc_rnn_config_for_dataset(rm, "lift", "ph", hdf5_type)
        cfg = make_config(json.loads(rm.dump()))
        assert cfg.algo_label == "bc_rnn_gmm" and cfg["train"]["seq_length"] == 10
        if hdf5_type == "image":
            assert cfg.obs_modalities()["agentview_image"] == "rgb"


def test_config_command_writes_templates(tmp_path, capsys):
    out = tmp_path / "bc_rnn.json"
    assert main(["config", "--algo", "bc_rnn", "--out", str(out)]) == 0
    cfg = load_config(out)
    assert cfg.algo_label == "bc_rnn_gmm" and cfg["train"]["seq_length"] == 10
    assert main(["config", "--algo", "bc_rnn", "--out", str(out)]) == 2  # no silent overwrite
    capsys.readouterr()
    assert main(["config", "--algo", "bc", "--modality", "image"]) == 0
    image = make_config(json.loads(capsys.readouterr().out))
    assert image["observation"]["modalities"]["obs"]["rgb"] == [
        "agentview_image",
        "robot0_eye_in_hand_image",
    ]
    assert main(["config", "--algo", "dqn"]) == 2


def test_validation_on_valid_filter_key(make_dataset, tmp_path):
    data = make_dataset(
        n_demos=6,
        low_dim=LOW_DIM,
        filter_keys={
            "train": ["demo_0", "demo_1", "demo_2", "demo_3"],
            "valid": ["demo_4", "demo_5"],
        },
    )
    cfg = small_config(num_epochs=2)
    cfg["experiment"]["validate"] = True
    cfg["experiment"]["save"]["on_best_validation"] = True
    result = Trainer(cfg, dataset=data, output_dir=str(tmp_path), name="v").run()
    assert all("action_loss" in h["valid"] for h in result.history)
    assert os.path.exists(tmp_path / "v" / "models" / "best_validation.pth")

    no_split = make_dataset(n_demos=3, low_dim=LOW_DIM)
    with pytest.raises(FilterKeyError, match="'train' not found"):
        Trainer(cfg, dataset=no_split, output_dir=str(tmp_path), name="w").run()


def test_missing_observation_key_is_named(make_dataset, tmp_path):
    data = make_dataset(n_demos=2, low_dim=LOW_DIM)
    cfg = small_config()
    cfg["observation"]["modalities"]["obs"]["low_dim"] = ["robot0_eef_pos", "robot0_gripper_qpos"]
    with pytest.raises(ConfigError, match="robot0_gripper_qpos") as err:
        Trainer(cfg, dataset=data, output_dir=str(tmp_path), name="m").run()
    assert "/data/demo_0/obs/robot0_gripper_qpos" in str(err.value)
