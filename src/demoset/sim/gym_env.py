"""gymnasium environments behind demoset's `Env` interface (env_args type 2).

Datasets converted from D4RL or Minari store gym environments: env_kwargs go to
`gymnasium.make`, observations are a single vector stored as obs key `flat` (as robomimic
names it), or the keys of a dict observation space. Simulator states are the MuJoCo
`qpos` and `qvel` concatenated for MuJoCo tasks, and the `state` vector of classic-control
tasks; other environments cannot be reset to a stored state.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

from demoset.errors import SimulationError
from demoset.format import ENV_TYPE_GYM, EnvMeta
from demoset.sim.base import Env

os.environ.setdefault("MUJOCO_GL", "osmesa")
if os.environ["MUJOCO_GL"] in ("osmesa", "egl"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

_MANAGED_KWARGS = ("render_mode", "env_name")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class GymEnv(Env):
    """A gymnasium environment made with `gymnasium.make(env_name, **env_kwargs)`."""

    def __init__(
        self,
        env_name: str,
        render_offscreen: bool = False,
        use_depth: bool = False,
        **env_kwargs: Any,
    ):
        try:
            import gymnasium
        except ImportError as exc:
            raise SimulationError(f"gymnasium is not installed ({exc})") from None
        if use_depth:
            raise SimulationError(
                "depth observations are only supported for robosuite environments"
            )
        self._env_name = env_name
        self._init_kwargs = {
            k: v for k, v in copy.deepcopy(env_kwargs).items() if k not in _MANAGED_KWARGS
        }
        make_kwargs = dict(self._init_kwargs)
        if render_offscreen:
            make_kwargs["render_mode"] = "rgb_array"
        try:
            self.env = gymnasium.make(env_name, **make_kwargs)
        except Exception as exc:  # noqa: BLE001 - gymnasium raises many kinds; all mean "cannot create"
            raise SimulationError(
                f"cannot create gymnasium environment {env_name!r}: {_first_line(exc)}"
            ) from None
        self._last_obs: Any = None
        self._last_reward = 0.0
        self._last_info: dict = {}
        self._seeded = False

    # ------------------------------------------------------------------ helpers
    @property
    def _unwrapped(self):
        return self.env.unwrapped

    def _is_mujoco(self) -> bool:
        return hasattr(self._unwrapped, "data") and hasattr(self._unwrapped, "set_state")

    @staticmethod
    def _as_obs_dict(obs: Any) -> dict[str, np.ndarray]:
        if isinstance(obs, dict):
            return {str(k): np.array(v) for k, v in obs.items()}
        return {"flat": np.array(obs)}

    # ------------------------------------------------------------------ Env API
    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        obs, info = self.env.reset(seed=seed)
        self._last_obs, self._last_info, self._last_reward = obs, info, 0.0
        return self._as_obs_dict(obs)

    def reset_to(self, state: dict[str, Any]) -> dict[str, np.ndarray] | None:
        if "states" not in state or state["states"] is None:
            return None
        flat = np.asarray(state["states"], dtype=np.float64).reshape(-1)
        env = self._unwrapped
        if self._last_obs is None:
            self.reset()
        if self._is_mujoco():
            nq, nv = int(env.model.nq), int(env.model.nv)
            if flat.shape[0] != nq + nv:
                raise SimulationError(
                    f"a state has {flat.shape[0]} values but {self._env_name} needs {nq + nv} (nq + nv)"
                )
            env.set_state(flat[:nq], flat[nq:])
        elif hasattr(env, "state"):
            current = np.asarray(env.state)
            if current.size != flat.size:
                raise SimulationError(
                    f"a state has {flat.size} values but {self._env_name} needs {current.size}"
                )
            env.state = flat.reshape(current.shape).astype(current.dtype, copy=False)
        else:
            raise SimulationError(f"{self._env_name} cannot be reset to a stored state")
        return self.get_observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action))
        self._last_obs, self._last_reward, self._last_info = obs, float(reward), dict(info)
        return (
            self._as_obs_dict(obs),
            float(reward),
            bool(terminated),
            dict(info, truncated=bool(truncated)),
        )

    def get_state(self) -> dict[str, Any]:
        env = self._unwrapped
        if self._is_mujoco():
            states = np.concatenate([np.array(env.data.qpos), np.array(env.data.qvel)])
        elif hasattr(env, "state") and env.state is not None:
            states = np.array(env.state, dtype=np.float64).reshape(-1)
        else:
            states = np.zeros(0)
        return {"states": states, "model": None}

    def get_observation(self) -> dict[str, np.ndarray]:
        env = self._unwrapped
        if hasattr(env, "_get_obs"):
            return self._as_obs_dict(env._get_obs())
        if hasattr(env, "state") and env.state is not None and not self._is_mujoco():
            return self._as_obs_dict(np.array(env.state))
        if self._last_obs is None:
            return self.reset()
        return self._as_obs_dict(self._last_obs)

    def render(self, camera_name: str, height: int, width: int, depth: bool = False) -> np.ndarray:
        if depth:
            raise SimulationError("depth rendering is only supported for robosuite environments")
        if self.env.render_mode != "rgb_array":
            raise SimulationError("rendering needs an environment made with render_offscreen=True")
        frame = self.env.render()
        if frame is None:
            raise SimulationError(f"{self._env_name} returned no frame")
        frame = np.asarray(frame, dtype=np.uint8)
        if frame.shape[:2] != (height, width):
            rows = np.linspace(0, frame.shape[0] - 1, int(height)).round().astype(int)
            cols = np.linspace(0, frame.shape[1] - 1, int(width)).round().astype(int)
            frame = frame[rows][:, cols]
        return np.ascontiguousarray(frame[..., :3])

    def is_success(self) -> bool:
        return bool(self._last_info.get("is_success", self._last_info.get("success", False)))

    def get_reward(self) -> float:
        return self._last_reward

    @property
    def env_meta(self) -> EnvMeta:
        return EnvMeta(
            env_name=self._env_name,
            env_type=ENV_TYPE_GYM,
            env_kwargs=copy.deepcopy(self._init_kwargs),
        )

    @property
    def action_dim(self) -> int:
        shape = getattr(self.env.action_space, "shape", None)
        if not shape:
            return 1
        return int(np.prod(shape))

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001
            pass
