"""Training configuration: robomimic-style JSON with sections algo_name, experiment, train,
observation and algo.

A config file is merged over the defaults of its algorithm. Every key must be one the
defaults know: a misspelt key is a ConfigError naming it, never silently ignored. Keys that
robomimic 0.3.0 configs carry for features demoset does not train (VAE, Gaussian and
transformer policies, wandb) are accepted so that robomimic's own JSON files load, but
turning those features on is a ConfigError.

Defaults and their meaning follow robomimic 0.3.0's `BaseConfig` and `BCConfig`; the
BC-RNN template follows the hyper-parameters robomimic's paper configs use for BC-RNN on
low-dim data (sequence length 10, 2-layer LSTM of 400, GMM head with 5 modes).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from demoset.errors import ConfigError

ALGORITHMS = ("bc", "bc_rnn")
"""Template names `demoset config --algo` accepts. Both train with `algo_name` "bc"."""

MODALITIES = ("low_dim", "rgb", "depth", "scan")
SUPPORTED_MODALITIES = ("low_dim", "rgb", "depth")
CACHE_MODES = ("all", "low_dim", None)

# Sub-trees whose keys are free-form (the user names them): dict keys are not checked.
_OPEN_PATHS = {"meta.hp_keys", "meta.hp_values"}


def _rgb_encoder() -> dict[str, Any]:
    return {
        "core_class": "VisualCore",
        "core_kwargs": {
            "feature_dimension": 64,
            "flatten": True,
            "backbone_class": "ResNet18Conv",
            "backbone_kwargs": {"pretrained": False, "input_coord_conv": False},
            "pool_class": "SpatialSoftmax",
            "pool_kwargs": {
                "num_kp": 32,
                "learnable_temperature": False,
                "temperature": 1.0,
                "noise_std": 0.0,
                "output_variance": False,
            },
        },
        "obs_randomizer_class": None,
        "obs_randomizer_kwargs": {
            "crop_height": 76,
            "crop_width": 76,
            "num_crops": 1,
            "pos_enc": False,
        },
    }


def _base_defaults() -> dict[str, Any]:
    """The full schema: every key a config may contain, with robomimic's defaults."""
    return {
        "algo_name": "bc",
        "experiment": {
            "name": "bc",
            "validate": False,
            "logging": {
                "terminal_output_to_txt": True,
                "log_tb": True,
                "log_wandb": False,
                "wandb_proj_name": "debug",
            },
            "save": {
                "enabled": True,
                "every_n_seconds": None,
                "every_n_epochs": 50,
                "epochs": [],
                "on_best_validation": False,
                "on_best_rollout_return": False,
                "on_best_rollout_success_rate": True,
            },
            "epoch_every_n_steps": 100,
            "validation_epoch_every_n_steps": 10,
            "env": None,
            "additional_envs": None,
            "render": False,
            "render_video": True,
            "keep_all_videos": False,
            "video_skip": 5,
            "rollout": {
                "enabled": False,
                "n": 50,
                "horizon": 400,
                "rate": 50,
                "warmstart": 0,
                "terminate_on_success": True,
            },
        },
        "train": {
            "data": None,
            "output_dir": "trained_models",
            "num_data_workers": 0,
            "hdf5_cache_mode": "all",
            "hdf5_use_swmr": True,
            "hdf5_load_next_obs": False,
            "hdf5_normalize_obs": False,
            "hdf5_filter_key": None,
            "hdf5_validation_filter_key": None,
            "seq_length": 1,
            "pad_seq_length": True,
            "frame_stack": 1,
            "pad_frame_stack": True,
            "dataset_keys": ["actions", "rewards", "dones"],
            "goal_mode": None,
            "action_normalization": None,
            "cuda": True,
            "batch_size": 100,
            "num_epochs": 2000,
            "seed": 1,
        },
        "algo": {
            "optim_params": {
                "policy": {
                    "optimizer_type": "adam",
                    "learning_rate": {
                        "initial": 1e-4,
                        "decay_factor": 0.1,
                        "epoch_schedule": [],
                        "scheduler_type": "multistep",
                    },
                    "regularization": {"L2": 0.0},
                }
            },
            "loss": {"l2_weight": 1.0, "l1_weight": 0.0, "cos_weight": 0.0},
            "actor_layer_dims": [1024, 1024],
            "gaussian": {
                "enabled": False,
                "fixed_std": False,
                "init_std": 0.1,
                "min_std": 0.01,
                "std_activation": "softplus",
                "low_noise_eval": True,
            },
            "gmm": {
                "enabled": False,
                "num_modes": 5,
                "min_std": 0.0001,
                "std_activation": "softplus",
                "low_noise_eval": True,
            },
            "vae": {"enabled": False},
            "rnn": {
                "enabled": False,
                "horizon": 10,
                "hidden_dim": 400,
                "rnn_type": "LSTM",
                "num_layers": 2,
                "open_loop": False,
                "kwargs": {"bidirectional": False, "dropout": 0.0},
            },
            "transformer": {"enabled": False},
        },
        "observation": {
            "modalities": {
                "obs": {
                    "low_dim": [
                        "robot0_eef_pos",
                        "robot0_eef_quat",
                        "robot0_gripper_qpos",
                        "object",
                    ],
                    "rgb": [],
                    "depth": [],
                    "scan": [],
                },
                "goal": {"low_dim": [], "rgb": [], "depth": [], "scan": []},
            },
            "encoder": {
                "low_dim": {
                    "core_class": None,
                    "core_kwargs": {},
                    "obs_randomizer_class": None,
                    "obs_randomizer_kwargs": {},
                },
                "rgb": _rgb_encoder(),
                "depth": _rgb_encoder(),
                "scan": {
                    "core_class": None,
                    "core_kwargs": {},
                    "obs_randomizer_class": None,
                    "obs_randomizer_kwargs": {},
                },
            },
        },
        "meta": {"hp_base_config_file": None, "hp_keys": [], "hp_values": []},
    }


# robomimic keys accepted for compatibility but left out of demoset's templates because
# demoset does nothing with them (a robomimic sub-tree under them is accepted whole).
_ROBOMIMIC_ONLY = {
    "experiment.logging.log_wandb",
    "experiment.logging.wandb_proj_name",
    "experiment.additional_envs",
    "experiment.render",
    "experiment.keep_all_videos",
    "experiment.save.on_best_rollout_return",
    "algo.gaussian",
    "algo.vae",
    "algo.transformer",
    "observation.modalities.obs.scan",
    "observation.modalities.goal.scan",
    "observation.encoder.scan",
    "meta",
}
# Sub-trees whose contents are accepted without key checks (robomimic features that
# demoset only needs to see switched off).
_FREE_SUBTREES = {"algo.vae", "algo.transformer", "algo.gaussian", "meta"}


def template(algo: str = "bc", modality: str = "low_dim") -> dict[str, Any]:
    """The config `demoset config --algo ALGO` writes.

    `algo` is "bc" (MLP policy) or "bc_rnn" (LSTM over seq_length windows with a GMM head).
    `modality` "image" adds the two robomimic cameras (agentview, robot0_eye_in_hand) with
    the ResNet-18 encoder, spatial softmax and 76x76 random crops, and robomimic's image
    defaults (batch 16, 500 steps per epoch, cache only low-dim data, 2 loader workers).
    """
    if algo not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}")
    if modality not in ("low_dim", "image"):
        raise ConfigError(f"unknown modality {modality!r}; choose low_dim or image")
    cfg = _base_defaults()
    for dotted in sorted(_ROBOMIMIC_ONLY):
        _delete(cfg, dotted)
    cfg["experiment"]["name"] = algo if modality == "low_dim" else f"{algo}_image"
    cfg["train"]["output_dir"] = "trained_models"
    if algo == "bc_rnn":
        cfg["train"]["seq_length"] = 10
        cfg["algo"]["actor_layer_dims"] = []
        cfg["algo"]["gmm"]["enabled"] = True
        cfg["algo"]["rnn"]["enabled"] = True
        cfg["algo"]["rnn"]["horizon"] = 10
        cfg["algo"]["rnn"]["hidden_dim"] = 400 if modality == "low_dim" else 1000
    if modality == "image":
        exp, train, obs = cfg["experiment"], cfg["train"], cfg["observation"]
        exp["epoch_every_n_steps"] = 500
        exp["validation_epoch_every_n_steps"] = 50
        exp["save"]["every_n_epochs"] = 20
        exp["rollout"]["rate"] = 20
        train["hdf5_cache_mode"] = "low_dim"
        train["num_data_workers"] = 2
        train["batch_size"] = 16
        train["num_epochs"] = 600
        obs["modalities"]["obs"]["low_dim"] = [
            "robot0_eef_pos",
            "robot0_eef_quat",
            "robot0_gripper_qpos",
        ]
        obs["modalities"]["obs"]["rgb"] = ["agentview_image", "robot0_eye_in_hand_image"]
        obs["encoder"]["rgb"]["obs_randomizer_class"] = "CropRandomizer"
    return cfg


def _delete(cfg: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node.pop(last, None)


class TrainConfig(dict):
    """A validated config: a plain dict (JSON-able) with a few read helpers."""

    @property
    def is_rnn(self) -> bool:
        return bool(self["algo"]["rnn"]["enabled"])

    @property
    def is_gmm(self) -> bool:
        return bool(self["algo"]["gmm"]["enabled"])

    @property
    def algo_label(self) -> str:
        """ "bc", "bc_gmm", "bc_rnn" or "bc_rnn_gmm": which network the config trains."""
        return "bc" + ("_rnn" if self.is_rnn else "") + ("_gmm" if self.is_gmm else "")

    def obs_modalities(self, group: str = "obs") -> dict[str, str]:
        """obs key -> modality ("low_dim", "rgb", "depth") for the obs (or goal) group."""
        out: dict[str, str] = {}
        for modality, keys in self["observation"]["modalities"][group].items():
            for key in keys:
                out[key] = modality
        return out

    @property
    def all_obs_keys(self) -> list[str]:
        keys = set(self.obs_modalities("obs")) | set(self.obs_modalities("goal"))
        return sorted(keys)

    def to_json(self) -> str:
        return json.dumps(self, indent=4)


def _merge(defaults: dict, user: dict, path: str, source: str | None) -> dict:
    """Merge `user` over `defaults`, refusing any key the defaults do not have."""
    out = copy.deepcopy(defaults)
    for key, value in user.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in defaults:
            raise ConfigError(f"unknown config key '{dotted}'", path=source)
        if dotted in _FREE_SUBTREES or dotted in _OPEN_PATHS:
            out[key] = copy.deepcopy(value)
            continue
        base = defaults[key]
        if isinstance(base, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' must be a JSON object", path=source)
            out[key] = _merge(base, value, dotted, source)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---------------------------------------------------------------------------- value checks
Rule = Callable[[Any], bool]


class Check(NamedTuple):
    """One row of the value checks: `rule(value at key)` must hold, else the ConfigError
    "config key '<key>' <message>". `when(cfg)`, if given, says whether the row applies."""

    key: str
    rule: Rule
    message: str
    when: Callable[[dict], bool] | None = None


def one_of(*choices: Any) -> Rule:
    return lambda v: v in choices


def at_least(low: int) -> Rule:
    return lambda v: v >= low


def null_or_int_at_least(low: int) -> Rule:
    return lambda v: v is None or (_is_int(v) and v >= low)


def positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and v > 0


def positive_ints(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(_is_int(d) and d > 0 for d in v)


def text_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(k, str) for k in v)


def _rnn_off(cfg: dict) -> bool:
    return not cfg["algo"]["rnn"]["enabled"]


def _linear_schedule(cfg: dict) -> bool:
    return cfg["algo"]["optim_params"]["policy"]["learning_rate"]["scheduler_type"] == "linear"


_LR = "algo.optim_params.policy.learning_rate"


def _encoder_checks(modality: str) -> list[tuple]:
    enc = f"observation.encoder.{modality}"
    core = f"{enc}.core_kwargs"
    return [
        (f"{enc}.core_class", one_of("VisualCore"), "must be VisualCore"),
        (f"{core}.flatten", lambda v: v is True, "must be true"),
        (f"{core}.backbone_class", one_of("ResNet18Conv"), "must be ResNet18Conv"),
        (
            f"{core}.backbone_kwargs.pretrained",
            lambda v: not v,
            "must be false (no pretrained weights are downloaded)",
        ),
        (f"{core}.backbone_kwargs.input_coord_conv", lambda v: not v, "is not supported"),
        (
            f"{core}.pool_class",
            one_of("SpatialSoftmax", "SpatialMeanPool", None),
            "must be SpatialSoftmax, SpatialMeanPool or null",
        ),
        (f"{core}.pool_kwargs.output_variance", lambda v: not v, "is not supported"),
        (
            f"{enc}.obs_randomizer_class",
            one_of(None, "CropRandomizer"),
            "must be CropRandomizer or null",
        ),
        (f"{enc}.obs_randomizer_kwargs.pos_enc", lambda v: not v, "is not supported"),
    ]


VALUE_CHECKS: list[tuple] = [
    ("algo_name", one_of("bc"), 'must be "bc" (BC and BC-RNN)'),
    *[
        (f"algo.{feature}.enabled", lambda v: not v, "is not supported by demoset train")
        for feature in ("gaussian", "vae", "transformer")
    ],
    *[
        (f"train.{key}", _is_int, "must be an integer")
        for key in ("batch_size", "num_epochs", "seq_length", "frame_stack", "seed")
    ],
    *[
        (f"train.{key}", at_least(1), "must be at least 1")
        for key in ("batch_size", "seq_length", "frame_stack")
    ],
    ("train.num_epochs", at_least(0), "must not be negative"),
    (
        "train.num_data_workers",
        lambda v: _is_int(v) and v >= 0,
        "must be a non-negative integer",
    ),
    (
        "train.hdf5_cache_mode",
        lambda v: v in CACHE_MODES or isinstance(v, str),
        'must be "all", "low_dim" or null',
    ),
    (
        "train.action_normalization",
        one_of(None, "min_max", "gaussian"),
        'must be null, "min_max" or "gaussian"',
    ),
    ("train.goal_mode", one_of(None, "last"), 'must be null or "last"'),
    *[
        (f"experiment.{key}", null_or_int_at_least(1), "must be null or >= 1")
        for key in ("epoch_every_n_steps", "validation_epoch_every_n_steps")
    ],
    ("experiment.save.every_n_epochs", null_or_int_at_least(1), "must be null or >= 1"),
    (
        "algo.optim_params.policy.optimizer_type",
        one_of("adam", "adamw"),
        'must be "adam" or "adamw"',
    ),
    (f"{_LR}.scheduler_type", one_of("multistep", "linear"), 'must be "multistep" or "linear"'),
    (f"{_LR}.initial", positive_number, "must be a positive number"),
    (
        f"{_LR}.epoch_schedule",
        lambda v: len(v) <= 1,
        "takes one end epoch for the linear schedule",
        _linear_schedule,
    ),
    ("algo.actor_layer_dims", positive_ints, "must be a list of positive integers"),
    ("algo.rnn.rnn_type", one_of("LSTM", "GRU"), "must be LSTM or GRU"),
    ("algo.rnn.horizon", lambda v: _is_int(v) and v >= 1, "must be >= 1"),
    ("algo.gmm.std_activation", one_of("softplus", "exp"), "must be softplus or exp"),
    ("algo.gmm.num_modes", lambda v: _is_int(v) and v >= 1, "must be >= 1"),
    (
        "train.seq_length",
        lambda v: v == 1,
        "must be 1 for BC without an RNN (set algo.rnn.enabled for BC-RNN)",
        _rnn_off,
    ),
    *[
        row
        for group in ("obs", "goal")
        for modality in MODALITIES
        for row in (
            (
                f"observation.modalities.{group}.{modality}",
                text_list,
                "must be a list of observation keys",
            ),
            (
                f"observation.modalities.{group}.{modality}",
                lambda v, m=modality: m in SUPPORTED_MODALITIES or not v,
                "is not supported by demoset train",
            ),
        )
    ],
    (
        "observation.modalities.obs",
        lambda v: any(v[m] for m in SUPPORTED_MODALITIES),
        "names no observation keys",
    ),
    *[row for modality in ("rgb", "depth") for row in _encoder_checks(modality)],
    (
        "observation.encoder.low_dim.core_class",
        lambda v: v is None,
        "must be null (low-dim observations are used as they are)",
    ),
]
"""The value checks of a merged config, in the order they run (the first failure is
reported, so a type row such as "must be an integer" comes before the range rows that
assume it). A key missing from the config (a robomimic-only sub-tree) reads as None."""


def _check_values(cfg: dict, source: str | None) -> None:
    """Reject values demoset cannot train with, naming the key: walk `VALUE_CHECKS`."""
    for check in (Check(*row) for row in VALUE_CHECKS):
        if check.when is not None and not check.when(cfg):
            continue
        if not check.rule(_lookup(cfg, check.key)):
            raise ConfigError(f"config key '{check.key}' {check.message}", path=source)


def _lookup(cfg: dict, dotted: str) -> Any:
    """The value at a dotted key; None where a robomimic-only sub-tree is absent."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def make_config(user: dict | None = None, source: str | None = None) -> TrainConfig:
    """Validate a config dict against the schema and return it merged over the defaults.

    The defaults are the "bc" template's, so a config holding only the keys it changes is
    complete. `source` (a file name) is named in errors.
    """
    user = user or {}
    if not isinstance(user, dict):
        raise ConfigError("a config must be a JSON object", path=source)
    merged = _merge(_base_defaults(), user, "", source)
    _check_values(merged, source)
    return TrainConfig(merged)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a JSON config file; unknown keys and bad values are ConfigErrors naming the key."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config ({exc.strerror})", path=path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON (line {exc.lineno}: {exc.msg})", path=path) from None
    return make_config(data, source=path)


def config_differences(a: dict, b: dict, path: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (for resume checks)."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        dotted = f"{path}.{key}" if path else key
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(config_differences(va, vb, dotted))
        elif _normalise(va) != _normalise(vb):
            out.append(dotted)
    return out


def _normalise(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_normalise(x) for x in v]
    if isinstance(v, list):
        return [_normalise(x) for x in v]
    return v
