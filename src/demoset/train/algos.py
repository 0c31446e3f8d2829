"""BC and BC-RNN: the policy networks, their losses, and acting in an environment.

BC maps one observation to one action through an MLP; BC-RNN runs an LSTM over
`seq_length` windows and predicts an action at every step. Either may end in a
deterministic tanh head trained with L2/L1/cosine losses or in a GMM head trained by
negative log-likelihood (robomimic 0.3.0's BC, BC_GMM, BC_RNN and BC_RNN_GMM).

`BCAlgo` owns the network, the optimizer and the normalisation statistics; the trainer
feeds it batches from demoset's SequenceDataset and the rollout code asks it for actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from demoset.train.config import TrainConfig
from demoset.train.models import (
    MLP,
    DeterministicHead,
    GMMHead,
    ObservationEncoder,
    RNNCore,
)


class ShapeMeta(dict):
    """What the network needs to know about the data, JSON-able for checkpoints.

    keys: obs_shapes {key: [per-step shape]}, goal_shapes {key: shape}, modalities
    {key: "low_dim"|"rgb"|"depth"}, ac_dim (int).
    """

    @classmethod
    def build(
        cls,
        obs_shapes: dict[str, Sequence[int]],
        ac_dim: int,
        modalities: dict[str, str],
        goal_shapes: dict[str, Sequence[int]] | None = None,
    ) -> ShapeMeta:
        return cls(
            obs_shapes={k: [int(d) for d in v] for k, v in obs_shapes.items()},
            goal_shapes={k: [int(d) for d in v] for k, v in (goal_shapes or {}).items()},
            modalities=dict(modalities),
            ac_dim=int(ac_dim),
        )


class PolicyNet(nn.Module):
    """Observation encoder -> (RNN) -> MLP trunk -> action head.

    `forward(obs, goal, actions)` is the training pass: with a GMM head it returns the
    log-likelihood of `actions` ([B] or [B, T]); otherwise the predicted actions. Keeping
    the loss inputs inside `forward` lets DistributedDataParallel wrap the module.
    """

    def __init__(self, config: TrainConfig, shape_meta: ShapeMeta):
        super().__init__()
        algo = config["algo"]
        enc_cfg = config["observation"]["encoder"]
        modalities = shape_meta["modalities"]
        self.is_rnn = config.is_rnn
        self.is_gmm = config.is_gmm
        self.obs_encoder = ObservationEncoder(shape_meta["obs_shapes"], modalities, enc_cfg)
        feat_dim = self.obs_encoder.out_dim
        self.goal_encoder = None
        if shape_meta["goal_shapes"]:
            self.goal_encoder = ObservationEncoder(shape_meta["goal_shapes"], modalities, enc_cfg)
            feat_dim += self.goal_encoder.out_dim
        self.rnn = None
        if self.is_rnn:
            rnn = algo["rnn"]
            kwargs = rnn.get("kwargs", {})
            self.rnn = RNNCore(
                feat_dim,
                rnn["hidden_dim"],
                rnn["num_layers"],
                rnn_type=rnn["rnn_type"],
                bidirectional=bool(kwargs.get("bidirectional", False)),
                dropout=float(kwargs.get("dropout", 0.0)),
            )
            feat_dim = self.rnn.out_dim
        self.trunk = MLP(feat_dim, algo["actor_layer_dims"])
        ac_dim = shape_meta["ac_dim"]
        if self.is_gmm:
            g = algo["gmm"]
            self.head: nn.Module = GMMHead(
                self.trunk.out_dim,
                ac_dim,
                num_modes=g["num_modes"],
                min_std=g["min_std"],
                std_activation=g["std_activation"],
                low_noise_eval=g["low_noise_eval"],
            )
        else:
            self.head = DeterministicHead(self.trunk.out_dim, ac_dim)

    def _features(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor] | None):
        """Encoded features [B, D] (BC) or [B, T, D] (RNN; obs carry a time dimension)."""
        if not self.is_rnn:
            feats = self.obs_encoder(obs)
            if self.goal_encoder is not None:
                feats = torch.cat([feats, self.goal_encoder(goal)], dim=-1)
            return feats
        first = next(iter(obs.values()))
        b, t = first.shape[:2]
        flat = {k: v.reshape(b * t, *v.shape[2:]) for k, v in obs.items()}
        feats = self.obs_encoder(flat).view(b, t, -1)
        if self.goal_encoder is not None:
            g = self.goal_encoder(goal).unsqueeze(1).expand(b, t, -1)
            feats = torch.cat([feats, g], dim=-1)
        return feats

    def head_inputs(self, obs, goal=None, rnn_state=None):
        """Trunk output ready for the head, plus the new RNN state (None for BC)."""
        feats = self._features(obs, goal)
        new_state = None
        if self.rnn is not None:
            feats, new_state = self.rnn(feats, rnn_state)
        return self.trunk(feats), new_state

    def forward(self, obs, goal=None, actions=None):
        x, _ = self.head_inputs(obs, goal)
        if self.is_gmm:
            return self.head(x).log_prob(actions)
        return self.head(x)

    def act(self, obs, goal=None, rnn_state=None):
        """Actions for one step: obs [B, ...] -> ([B, A], new RNN state)."""
        if self.rnn is not None:
            obs = {k: v.unsqueeze(1) for k, v in obs.items()}
        x, state = self.head_inputs(obs, goal, rnn_state)
        if self.rnn is not None:
            x = x[:, 0]
        out = self.head(x)
        if self.is_gmm:
            out = out.sample()
        return out, state


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged (direction of the end-effector motion)."""
    return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()


class Normalizer:
    """Observation normalisation (mean/std) and the inverse of action normalisation.

    Observations are normalised here, with the training set's statistics, for training,
    validation and acting alike. Actions arrive normalised from the SequenceDataset
    (normalised = (raw - offset) / scale); the policy's outputs are mapped back to
    environment actions with the same statistics. Statistics are plain nested lists so
    they can travel in a `weights_only` checkpoint.
    """

    def __init__(self, obs_stats: dict | None, action_stats: dict | None, device: torch.device):
        self.obs_stats = obs_stats
        self.action_stats = action_stats
        self._obs = {}
        for key, st in (obs_stats or {}).items():
            mean = np.asarray(st["mean"], dtype=np.float32)
            std = np.asarray(st["std"], dtype=np.float32)
            if mean.ndim > 1 and mean.shape[0] == 1:  # robomimic keeps a leading 1
                mean, std = mean[0], std[0]
            self._obs[key] = (
                torch.as_tensor(mean, device=device),
                torch.as_tensor(std, device=device),
            )
        self._act = None
        if action_stats is not None:
            scale = np.asarray(action_stats["scale"], dtype=np.float32).reshape(-1)
            offset = np.asarray(action_stats["offset"], dtype=np.float32).reshape(-1)
            self._act = (
                torch.as_tensor(scale, device=device),
                torch.as_tensor(offset, device=device),
            )

    def obs(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(obs)
        for key, (mean, std) in self._obs.items():
            if key in out:
                out[key] = (out[key].float() - mean) / std  # broadcasts over [B] or [B, T]
        return out

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        if self._act is None:
            return actions
        scale, offset = self._act
        return actions * scale + offset


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    return x


class BCAlgo:
    """BC / BC-RNN with optional GMM head: network, optimizer, losses, acting.

    `train_on_batch` does one gradient step and returns floats to log; `get_action`
    returns an un-normalised numpy action for one environment observation.
    """

    def __init__(
        self,
        config: TrainConfig,
        shape_meta: ShapeMeta,
        obs_stats: dict | None = None,
        action_stats: dict | None = None,
        device: torch.device | str = "cpu",
    ):
        self.config = config
        self.shape_meta = shape_meta
        self.device = torch.device(device)
        self.net = PolicyNet(config, shape_meta).float().to(self.device)
        self.train_net: nn.Module = self.net  # replaced by a DDP wrapper when distributed
        self.normalizer = Normalizer(obs_stats, action_stats, self.device)
        opt = config["algo"]["optim_params"]["policy"]
        cls = torch.optim.AdamW if opt["optimizer_type"] == "adamw" else torch.optim.Adam
        self.optimizer = cls(
            self.net.parameters(),
            lr=opt["learning_rate"]["initial"],
            weight_decay=opt["regularization"]["L2"],
        )
        self.loss_weights = config["algo"]["loss"]
        rnn = config["algo"]["rnn"]
        self.rnn_horizon = int(rnn["horizon"])
        self.open_loop = bool(rnn.get("open_loop", False))
        self._rnn_state = None
        self._rnn_counter = 0
        self._open_loop_obs = None

    # ---- learning rate ----------------------------------------------------------------
    def learning_rate(self, epoch: int) -> float:
        """Learning rate for an epoch (1-based), from robomimic's multistep/linear schedules."""
        lr = self.config["algo"]["optim_params"]["policy"]["learning_rate"]
        schedule = list(lr["epoch_schedule"])
        if not schedule:
            return float(lr["initial"])
        done = epoch - 1  # epochs completed before this one
        if lr["scheduler_type"] == "linear":
            end = schedule[0]
            frac = min(done, end) / end if end > 0 else 1.0
            return float(lr["initial"] * (1.0 + (lr["decay_factor"] - 1.0) * frac))
        passed = sum(1 for m in schedule if done >= m)
        return float(lr["initial"] * lr["decay_factor"] ** passed)

    def set_epoch(self, epoch: int) -> float:
        value = self.learning_rate(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = value
        return value

    # ---- batches ----------------------------------------------------------------------
    def process_batch(self, batch: dict) -> dict:
        """Select the steps the algorithm trains on, move to the device, normalise."""
        obs = batch["obs"]
        actions = batch["actions"]
        goal = batch.get("goal_obs")
        if not self.net.is_rnn:
            obs = {k: v[:, 0] for k, v in obs.items()}
            actions = actions[:, 0]
        elif self.open_loop:
            obs = {k: v[:, :1].expand(*v.shape) for k, v in obs.items()}
        goal_shapes = self.shape_meta["goal_shapes"]
        goal_obs = None
        if goal is not None and goal_shapes:
            # goals carry no time axis ([B, ...]); take the first step if one is there
            goal_obs = {
                k: goal[k][:, 0] if goal[k].dim() == len(goal_shapes[k]) + 2 else goal[k]
                for k in goal_shapes
            }
            goal_obs = _to_device(goal_obs, self.device)
        out = {
            "obs": _to_device({k: obs[k] for k in self.shape_meta["obs_shapes"]}, self.device),
            "actions": _to_device(actions, self.device).float(),
            "goal_obs": goal_obs,
        }
        out["obs"] = self.normalizer.obs(out["obs"])
        if out["goal_obs"] is not None:
            out["goal_obs"] = self.normalizer.obs(out["goal_obs"])
        return out

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self.train_net(batch["obs"], batch["goal_obs"], batch["actions"])
        if self.net.is_gmm:
            nll = -out.mean()
            return {"action_loss": nll, "log_likelihood": -nll.detach()}
        target = batch["actions"]
        w = self.loss_weights
        losses = {
            "l2_loss": F.mse_loss(out, target),
            "l1_loss": F.smooth_l1_loss(out, target),
            "cos_loss": cosine_loss(out[..., :3], target[..., :3]),
        }
        losses["action_loss"] = (
            w["l2_weight"] * losses["l2_loss"]
            + w["l1_weight"] * losses["l1_loss"]
            + w["cos_weight"] * losses["cos_loss"]
        )
        return losses

    def train_on_batch(self, batch: dict) -> dict[str, float]:
        """One gradient step on a processed batch; returns the losses and grad norm."""
        self.train_net.train()
        losses = self.compute_losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["action_loss"].backward()
        grad_norm = nn.utils.clip_grad_norm_(self.net.parameters(), float("inf"))
        self.optimizer.step()
        log = {k: float(v.detach()) for k, v in losses.items()}
        log["policy_grad_norm"] = float(grad_norm)
        return log

    @torch.no_grad()
    def validate_on_batch(self, batch: dict) -> dict[str, float]:
        """Losses on a processed batch without learning.

        The network is in evaluation mode (batch-norm running statistics, centre crops),
        except that a GMM head keeps its learned scales so the likelihood is comparable
        with the training loss. The plain module is used, so no gradient sync happens.
        """
        self.net.eval()
        self.net.head.train()
        saved = self.train_net
        self.train_net = self.net
        try:
            losses = self.compute_losses(batch)
        finally:
            self.train_net = saved
        return {k: float(v) for k, v in losses.items()}

    # ---- acting -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget RNN state: call at the start of every episode."""
        self._rnn_state = None
        self._rnn_counter = 0
        self._open_loop_obs = None

    @torch.no_grad()
    def get_action(
        self, obs: dict[str, np.ndarray], goal: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Action for one environment observation (no batch dimension), un-normalised."""
        self.net.eval()
        keys = self.shape_meta["obs_shapes"]
        batch = {k: torch.as_tensor(np.asarray(obs[k])).unsqueeze(0).to(self.device) for k in keys}
        batch = self.normalizer.obs(batch)
        goal_t = None
        if goal is not None and self.shape_meta["goal_shapes"]:
            goal_t = {
                k: torch.as_tensor(np.asarray(goal[k])).unsqueeze(0).to(self.device)
                for k in self.shape_meta["goal_shapes"]
            }
            goal_t = self.normalizer.obs(goal_t)
        if self.net.is_rnn:
            if self._rnn_state is None or self._rnn_counter % self.rnn_horizon == 0:
                self._rnn_state = self.net.rnn.init_state(1, self.device)
                if self.open_loop:
                    self._open_loop_obs = batch
            if self.open_loop:
                batch = self._open_loop_obs
            self._rnn_counter += 1
        action, self._rnn_state = self.net.act(batch, goal_t, self._rnn_state)
        action = self.normalizer.unnormalize_actions(action)
        return action[0].float().cpu().numpy()
