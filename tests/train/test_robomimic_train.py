"""robomimic 0.3.0's own train.py on demoset's loader (`demoset.robomimic`, `demoset robomimic-train`).

Each run is the real train.py (its parser, main(), algorithm, checkpoints), kept tiny:
2 epochs of 3 gradient steps, small networks, no rollouts. The same run with robomimic's
own loader is the reference: same seed, so the same DataLoader order, and when both
datasets give the same batches the checkpoints hold identical weights.

robomimic imports torchvision through robomimic.algo; PyPI's torchvision does not import
beside this CPU torch, so the tests put the stub from tests.helpers in sys.modules. The
networks used here (MLP, LSTM, ShallowConv, CropRandomizer) never call it.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch

from demoset.cli.main import main
from demoset.errors import ConfigError

from tests.helpers import stub_torchvision, write_dataset

stub_torchvision()

import demoset.robomimic as DR  # noqa: E402

LOW_DIM = {"robot0_eef_pos": 3, "object": 10}
CAMERAS = ("agentview", "robot0_eye_in_hand")
IMAGE_KEYS = [f"{c}_image" for c in CAMERAS]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm_train")
    low = write_dataset(root / "low.hdf5", n_demos=6, min_len=12, max_len=25, low_dim=LOW_DIM)
    img = write_dataset(
        root / "img.hdf5",
        n_demos=4,
        min_len=10,
        max_len=16,
        low_dim=LOW_DIM,
        cameras=CAMERAS,
        image_size=32,
        seed=1,
    )
    return {"low": low, "img": img}


def config(name: str, data: str, out, images: bool = False) -> dict:
    """A tiny robomimic 0.3.0 BC config: BC-RNN on low-dim, BC with two cameras on images."""
    cfg = {
        "algo_name": "bc",
        "experiment": {
            "name": name,
            "validate": False,
            "logging": {"terminal_output_to_txt": True, "log_tb": False},
            "save": {"enabled": True, "every_n_epochs": 1},
            "epoch_every_n_steps": 3,
            "rollout": {"enabled": False},
            "render_video": False,
        },
        "train": {
            "data": data,
            "output_dir": str(out),
            "hdf5_cache_mode": "all",
            "seq_length": 10,
            "batch_size": 8,
            "num_epochs": 2,
            "cuda": False,
            "seed": 1,
            "hdf5_load_next_obs": False,
        },
        "algo": {
            "actor_layer_dims": [32, 32],
            "rnn": {"enabled": True, "horizon": 10, "hidden_dim": 16, "num_layers": 1},
        },
        "observation": {"modalities": {"obs": {"low_dim": list(LOW_DIM)}}},
    }
    if images:
        cfg["train"].update(hdf5_cache_mode="low_dim", seq_length=1)
        cfg["algo"]["rnn"]["enabled"] = False
        cfg["observation"] = {
            "modalities": {"obs": {"low_dim": list(LOW_DIM), "rgb": IMAGE_KEYS}},
            "encoder": {
                "rgb": {
                    "core_kwargs": {
                        "backbone_class": "ShallowConv",
                        "pool_class": "SpatialSoftmax",
                        "pool_kwargs": {"num_kp": 8},
                        "feature_dimension": 16,
                    },
                    "obs_randomizer_class": "CropRandomizer",
                    "obs_randomizer_kwargs": {"crop_height": 28, "crop_width": 28},
                }
            },
        }
    return cfg


def write_config(tmp_path, cfg: dict) -> str:
    path = tmp_path / f"{cfg['experiment']['name']}.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def run_dir(out, name: str) -> str:
    (found,) = glob.glob(os.path.join(str(out), name, "*"))
    return found


def weights(out, name: str, epoch: int) -> dict:
    ckpt = os.path.join(run_dir(out, name), "models", f"model_epoch_{epoch}.pth")
    return torch.load(ckpt, map_location="cpu", weights_only=False)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def log_text(out, name: str) -> str:
    with open(os.path.join(run_dir(out, name), "logs", "log.txt")) as f:
        return f.read()


def test_cli_runs_robomimic_train_py_on_demoset_low_dim(files, tmp_path):
    cfg = write_config(tmp_path, config("ours", files["low"], tmp_path / "a"))
    assert main(["robomimic-train", "--config", cfg, "--dataset", files["low"]]) == 0
    ref_cfg = write_config(tmp_path, config("ref", files["low"], tmp_path / "b"))
    DR.run_train_script(["--config", ref_cfg], use_demoset=False)

    assert "SequenceDataset(path=" in log_text(tmp_path / "a", "ours")  # demoset's dataset
    assert "SequenceDataset (\n" in log_text(tmp_path / "b", "ref")  # robomimic's
    ours, ref = weights(tmp_path / "a", "ours", 2), weights(tmp_path / "b", "ref", 2)
    assert_same_weights(ours, ref)  # same batches in the same order
    first = weights(tmp_path / "a", "ours", 1)
    assert any(not torch.equal(first[k], ours[k]) for k in ours)  # it did train
    assert not DR.is_installed()  # the run's install() was undone

    # train.py's DataLoader exactly as written (torch's default collate): the same run
    plain = write_config(tmp_path, config("plain", files["low"], tmp_path / "c"))
    assert main(["robomimic-train", "--config", plain, "--default-collate"]) == 0
    assert_same_weights(weights(tmp_path / "c", "plain", 2), ref)


def test_library_runs_train_py_on_demoset_images(files, tmp_path):
    cfg = write_config(tmp_path, config("ours", files["img"], tmp_path / "a", images=True))
    ref_cfg = write_config(tmp_path, config("ref", files["img"], tmp_path / "b", images=True))
    DR.run_train_script(["--config", cfg])
    DR.run_train_script(["--config", ref_cfg], use_demoset=False)
    assert "SequenceDataset(path=" in log_text(tmp_path / "a", "ours")
    assert_same_weights(weights(tmp_path / "a", "ours", 2), weights(tmp_path / "b", "ref", 2))


@pytest.mark.parametrize("which", ["low", "img"])
def test_first_batches_equal_robomimic_through_its_factory(files, tmp_path, which):
    """dataset_factory + the DataLoader train.py builds, seeded as train.py seeds it."""
    import robomimic.utils.obs_utils as ObsUtils
    import robomimic.utils.train_utils as TrainUtils
    from robomimic.config import config_factory

    cfg = config_factory("bc")
    with cfg.values_unlocked():
        cfg.update(config("x", files[which], tmp_path, images=which == "img"))
    ObsUtils.initialize_obs_utils_with_config(cfg)
    obs_keys = list(LOW_DIM) + (IMAGE_KEYS if which == "img" else [])

    def first_batches(use_demoset: bool) -> list:
        with DR.installed(use_demoset):
            ds = TrainUtils.dataset_factory(cfg, obs_keys)
        torch.manual_seed(cfg.train.seed)
        loader = torch.utils.data.DataLoader(
            ds,
            sampler=ds.get_dataset_sampler(),
            batch_size=cfg.train.batch_size,
            shuffle=True,
            drop_last=True,
        )
        it = iter(loader)
        return type(ds).__module__, [next(it) for _ in range(3)]

    ours_module, ours = first_batches(True)
    ref_module, ref = first_batches(False)
    assert ours_module.startswith("demoset.") and ref_module.startswith("robomimic.")
    for a, b in zip(ours, ref):
        for group in ("obs", "next_obs"):
            assert a.get(group, {}).keys() == b.get(group, {}).keys()
        assert set(b) <= set(a)  # demoset adds "index" (robomimic's later releases do too)
        for key in ("actions", "rewards", "dones"):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        for key in obs_keys:
            assert a["obs"][key].dtype == b["obs"][key].dtype
            assert torch.equal(a["obs"][key], b["obs"][key]), key


def test_install_is_explicit_and_reversible():
    import robomimic.utils.train_utils as TrainUtils
    from robomimic.utils.dataset import SequenceDataset as RobomimicDataset

    from demoset.loader import SequenceDataset

    assert TrainUtils.SequenceDataset is RobomimicDataset  # importing demoset changes nothing
    DR.install()
    DR.install()
    assert TrainUtils.SequenceDataset is SequenceDataset and DR.is_installed()
    with DR.installed(use_demoset=False):
        assert TrainUtils.SequenceDataset is RobomimicDataset
    assert TrainUtils.SequenceDataset is SequenceDataset
    DR.uninstall()
    assert TrainUtils.SequenceDataset is RobomimicDataset and not DR.is_installed()
    DR.uninstall()  # harmless when not installed


def test_failed_runs_are_errors_not_prints(files, tmp_path, capsys):
    cfg = config("bad", files["low"], tmp_path / "a")
    cfg["observation"]["modalities"]["obs"]["low_dim"].append("no_such_key")
    path = write_config(tmp_path, cfg)
    with pytest.raises(Exception, match="no_such_key"):
        DR.run_train_script(["--config", path])  # robomimic's metadata read fails first
    assert main(["robomimic-train", "--config", path]) == 2
    assert "demoset robomimic-train: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["robomimic-train", "--config", path, "--no-such-flag"])  # robomimic's parser
    assert exit_info.value.code == 2
    assert main(["robomimic-train", "--config", str(tmp_path / "missing.json")]) == 2


def test_demoset_errors_come_through_unchanged(files, tmp_path):
    """A dataset demoset refuses fails the run with demoset's own one-line error."""
    cfg = config("short", files["low"], tmp_path / "a")
    cfg["train"].update(seq_length=40, pad_seq_length=False)  # longer than every demo
    cfg["algo"]["rnn"]["horizon"] = 40
    with pytest.raises(ConfigError, match="seq_length=40"):
        DR.run_train_script(["--config", write_config(tmp_path, cfg)])


def test_torchvision_stand_in_fails_clearly_when_used():
    """Where torchvision does not import, the stand-in names what needs it (fresh process)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from demoset.robomimic import stub_torchvision_if_missing\n"
        "try:\n"
        "    import torchvision\n"
        "    print('REAL')\n"
        "    sys.exit(0)\n"
        "except Exception:\n"
        "    pass\n"
        "reason = stub_torchvision_if_missing()\n"
        "assert reason, reason\n"
        "from torchvision import models\n"
        "from torchvision.transforms import Lambda\n"
        "try:\n"
        "    models.resnet18(pretrained=False)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    if out.strip() == "REAL":
        pytest.skip("torchvision imports here: no stand-in is used")
    assert out.startswith("ConfigError torchvision.models.resnet18 is needed")
    assert np.char.count(out.strip(), "\n") == 0
