"""BC-RNN and the camera encoder learn on real demoset datasets; the encoder parts behave."""

from __future__ import annotations

import pytest
import torch

from demoset.train.checkpoint import algo_from_checkpoint, load_checkpoint
from demoset.train.config import template
from demoset.train.models import CropRandomizer, GMMHead, ResNet18Conv, SpatialSoftmax
from demoset.train.trainer import Trainer


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bc_rnn_gmm_loss_falls(make_dataset, tmp_path):
    data = make_dataset(
        n_demos=4, min_len=12, max_len=16, low_dim={"robot0_eef_pos": 3, "object": 10}
    )
    cfg = template("bc_rnn")
    cfg["observation"]["modalities"]["obs"]["low_dim"] = ["robot0_eef_pos", "object"]
    cfg["experiment"]["epoch_every_n_steps"] = 10
    cfg["train"].update(batch_size=16, num_epochs=5, seq_length=5)
    cfg["algo"]["rnn"].update(hidden_dim=64, horizon=5)
    cfg["algo"]["optim_params"]["policy"]["learning_rate"]["initial"] = 1e-3
    result = Trainer(cfg, dataset=data, output_dir=str(tmp_path), name="rnn").run()
    losses = [h["train"]["action_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.5, losses  # negative log-likelihood, nats

    # acting: the hidden state is carried for `horizon` steps, then reset
    algo = algo_from_checkpoint(load_checkpoint(result.last_checkpoint))
    algo.reset()
    obs = {"robot0_eef_pos": torch.zeros(3).numpy(), "object": torch.zeros(10).numpy()}
    for _ in range(6):
        action = algo.get_action(obs)
    assert action.shape == (7,) and algo._rnn_counter == 6


def test_image_encoder_loss_falls(make_dataset, tmp_path):
    data = make_dataset(
        n_demos=3,
        min_len=8,
        max_len=10,
        low_dim={"robot0_eef_pos": 3},
        cameras=("agentview",),
        image_size=20,
    )
    cfg = template("bc")
    obs = cfg["observation"]
    obs["modalities"]["obs"]["low_dim"] = ["robot0_eef_pos"]
    obs["modalities"]["obs"]["rgb"] = ["agentview_image"]
    obs["encoder"]["rgb"]["obs_randomizer_class"] = "CropRandomizer"
    obs["encoder"]["rgb"]["obs_randomizer_kwargs"].update(crop_height=18, crop_width=18)
    cfg["experiment"]["epoch_every_n_steps"] = 6
    cfg["train"].update(batch_size=8, num_epochs=3, hdf5_cache_mode="low_dim")
    cfg["algo"]["actor_layer_dims"] = [64]
    cfg["algo"]["optim_params"]["policy"]["learning_rate"]["initial"] = 1e-3
    result = Trainer(cfg, dataset=data, output_dir=str(tmp_path), name="img").run()
    losses = [h["train"]["action_loss"] for h in result.history]
    assert losses[-1] < 0.95 * losses[0], losses
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["shape_meta"]["modalities"]["agentview_image"] == "rgb"
    assert any(k.startswith("obs_encoder.cores.agentview_image.backbone") for k in ckpt["model"])


def test_crop_randomizer_random_in_training_centre_in_eval():
    torch.manual_seed(0)
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    crop = CropRandomizer([3, 8, 8], crop_height=5, crop_width=6, num_crops=2)
    out = crop.crop(images)
    assert out.shape == (4, 3, 5, 6)
    for i in range(4):  # every crop is a contiguous window of its own image
        src = images[i // 2]
        found = any(
            torch.equal(out[i], src[:, t : t + 5, left : left + 6])
            for t in range(4)
            for left in range(3)
        )
        assert found
    assert crop.merge(torch.ones(4, 7)).shape == (2, 7)
    crop.eval()
    assert torch.equal(crop.crop(images), images[:, :, 1:6, 1:7])


def test_spatial_softmax_finds_the_peak():
    features = torch.full((1, 1, 5, 5), -50.0)
    features[0, 0, 4, 0] = 50.0  # bottom-left corner
    ss = SpatialSoftmax([1, 5, 5], num_kp=None)
    kp = ss(features)
    assert kp.shape == (1, 1, 2)
    torch.testing.assert_close(kp[0, 0], torch.tensor([-1.0, 1.0]))
    assert ResNet18Conv.output_shape([3, 84, 84]) == [512, 3, 3]
    assert ResNet18Conv(3)(torch.zeros(1, 3, 84, 84)).shape == (1, 512, 3, 3)


def test_gmm_head_low_noise_eval_returns_a_mode_mean():
    torch.manual_seed(0)
    head = GMMHead(4, 2, num_modes=3)
    x = torch.randn(5, 4)
    head.eval()
    sample = head(x).sample()
    means = torch.tanh(head.mean(x)).view(5, 3, 2)
    dist = (means - sample[:, None]).abs().amax(-1).amin(-1)
    assert torch.all(dist < 1e-2)
