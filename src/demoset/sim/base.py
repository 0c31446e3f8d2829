"""The environment interface the simulator pipeline needs, whatever simulator is behind it.

Extraction, playback, videos and policy rollouts only use these methods, so a robosuite
environment and a gymnasium environment are interchangeable to them. The shape follows
robomimic's `EnvBase` (reset / reset_to / step / get_state / is_success), because datasets
store exactly what that interface produces: flat simulator states, the model XML and the
`env_args` JSON.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from demoset.format import EnvMeta


class Env(abc.ABC):
    """One simulator instance behind the pipeline's interface.

    Observations are dicts of numpy arrays named as robomimic names them: camera frames
    `<camera>_image` (uint8, H x W x 3, upright), depth `<camera>_depth` (float32,
    H x W x 1, metres), low-dim arrays as the simulator gives them.
    """

    @abc.abstractmethod
    def reset(self) -> dict[str, np.ndarray]:
        """Start a new episode and return its first observation."""

    @abc.abstractmethod
    def reset_to(self, state: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """Put the simulator into a stored state.

        `state` may hold "model" (the scene XML stored with a demo), "ep_meta" (episode
        metadata, dict or JSON text) and "states" (one flat simulator state). Returns the
        observation when "states" was given, else None (a model alone has no state yet).
        """

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        """Apply one action; returns (observation, reward, done, info)."""

    def advance(self, action: np.ndarray) -> None:
        """Apply one action when its observation is not wanted (may skip camera rendering)."""
        self.step(action)

    @abc.abstractmethod
    def get_state(self) -> dict[str, Any]:
        """{"states": flat simulator state, "model": scene XML (None when there is none)}."""

    @abc.abstractmethod
    def get_observation(self) -> dict[str, np.ndarray]:
        """The observation of the current simulator state."""

    @abc.abstractmethod
    def render(self, camera_name: str, height: int, width: int, depth: bool = False) -> np.ndarray:
        """An upright uint8 RGB frame (H, W, 3), or with `depth` a float32 (H, W, 1) map."""

    @abc.abstractmethod
    def is_success(self) -> bool:
        """Whether the task is solved in the current state."""

    @abc.abstractmethod
    def get_reward(self) -> float:
        """The reward of the current state."""

    @property
    @abc.abstractmethod
    def env_meta(self) -> EnvMeta:
        """What recreates this environment: env_name, env_type, env_kwargs (the `env_args`)."""

    @property
    @abc.abstractmethod
    def action_dim(self) -> int:
        """Length of an action vector."""

    @property
    def name(self) -> str:
        return self.env_meta.env_name

    @property
    def camera_names(self) -> tuple[str, ...]:
        """Cameras whose frames are part of every observation."""
        return ()

    def close(self) -> None:  # noqa: B027 - an optional hook; most environments need nothing
        """Free the simulator (rendering contexts, windows)."""

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
