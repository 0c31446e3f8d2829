"""One demo's extraction: the unit of work every executor runs (a process pool, Ray tasks).

`extract_demo` resets the simulator to a demo's model and to each stored state and reads the
observations; `extract_one` wraps it for a worker, turning any failure into a one-line
reason that names the demo instead of ending the run. `sim/extract.py` schedules and
writes; this module knows nothing of either, so every executor shares it.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from demoset.errors import DemosetError, SimulationError
from demoset.format import EnvMeta
from demoset.format import constants as C


@dataclass(frozen=True)
class ExtractOptions:
    """What to extract; the same names as robomimic's dataset_states_to_obs flags."""

    camera_names: tuple[str, ...] = ()
    camera_height: int = 84
    camera_width: int = 84
    depth: bool = False
    done_mode: int = 0
    shaped: bool = False
    copy_rewards: bool = False
    copy_dones: bool = False
    reuse_renderer: bool = True
    """Keep the rendering context between demos whose scenes look alike (same output, faster)."""


@dataclass
class DemoResult:
    """One demo's extracted arrays, sent from a worker to the writing process."""

    demo: str
    obs: dict[str, np.ndarray]
    final_obs: dict[str, np.ndarray]
    rewards: np.ndarray
    dones: np.ndarray
    black_frames: dict[str, list[int]]
    env_meta: dict
    seconds: float


# ---------------------------------------------------------------------------- reading input
def source_env_meta(df) -> EnvMeta:
    """The env_args of a dataset, or of a raw robosuite file (attrs env / env_info)."""
    meta = df.env_meta
    if meta is not None:
        return meta
    attrs = df.data_attrs()
    if "env" in attrs and "env_info" in attrs:
        from demoset.format import env_meta_from_raw_attrs

        return env_meta_from_raw_attrs(attrs, df.path)
    raise SimulationError(
        "the file has no env_args (and no robosuite env / env_info attributes)", df.path, "/data"
    )


def done_flags(successes: np.ndarray, done_mode: int) -> np.ndarray:
    """dones from per-step success of the next state: mode 0 success, 1 last step, 2 either."""
    n = len(successes)
    dones = np.zeros(n, dtype=np.int64)
    if done_mode in (1, 2) and n:
        dones[-1] = 1
    if done_mode in (0, 2):
        dones |= successes.astype(np.int64)
    return dones


def black_frame_indices(frames: np.ndarray) -> list[int]:
    """Indices of frames whose every pixel is zero."""
    flat = frames.reshape(frames.shape[0], -1)
    return np.flatnonzero(flat.max(axis=1) == 0).tolist()


def _stack(observations: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([o[key] for o in observations]) for key in observations[0]}


# ---------------------------------------------------------------------------- one demo
def extract_demo(env, df, demo: str, options: ExtractOptions) -> DemoResult:
    """Replay one demo's states through `env` and return its observations, rewards, dones."""
    start = time.perf_counter()
    states = df.read(demo, C.STATES)
    actions = df.read(demo, C.ACTIONS)
    if states.ndim != 2 or len(states) != len(actions) or len(states) == 0:
        raise SimulationError(f"states {states.shape} and actions {actions.shape} do not match")
    attrs = df.demo_attrs(demo)
    initial: dict[str, Any] = {"states": states[0]}
    if attrs.get(C.ATTR_MODEL_FILE):
        initial["model"] = attrs[C.ATTR_MODEL_FILE]
    if attrs.get(C.ATTR_EP_META):
        initial["ep_meta"] = attrs[C.ATTR_EP_META]
    n = len(states)
    observations = [env.reset_to(initial)]
    rewards = np.zeros(n, dtype=np.float64)
    successes = np.zeros(n, dtype=bool)
    for t in range(1, n):
        observations.append(env.reset_to({"states": states[t]}))
        rewards[t - 1] = env.get_reward()
        successes[t - 1] = env.is_success()
    if hasattr(env, "restore_action_history"):
        env.restore_action_history(actions[: n - 1])
    env.advance(actions[n - 1])
    # Observe the reached state the way every other state here is observed (set, forward,
    # read): robosuite's step returns observables sampled at an earlier substep and
    # positions from before the last integration. (So the step itself renders nothing.)
    final_obs = env.reset_to({"states": env.get_state()["states"]})
    rewards[n - 1] = env.get_reward()
    successes[n - 1] = env.is_success()

    if options.copy_rewards:
        if not df.has(demo, C.REWARDS):
            raise SimulationError("copy_rewards: the demo has no rewards to copy")
        rewards = df.read(demo, C.REWARDS)
    dones = done_flags(successes, options.done_mode)
    if options.copy_dones:
        if not df.has(demo, C.DONES):
            raise SimulationError("copy_dones: the demo has no dones to copy")
        dones = df.read(demo, C.DONES)

    obs = _stack(observations)
    black = {k: black_frame_indices(v) for k, v in obs.items() if k.endswith("_image")}
    black = {k: v for k, v in black.items() if v}
    return DemoResult(
        demo=demo,
        obs=obs,
        final_obs=final_obs,
        rewards=rewards,
        dones=dones,
        black_frames=black,
        env_meta=env.env_meta.to_dict(),
        seconds=time.perf_counter() - start,
    )


def make_extraction_env(env_meta: EnvMeta, options: ExtractOptions):
    from demoset.sim.factory import make_env

    robosuite_only = {}
    if env_meta.env_type == C.ENV_TYPE_ROBOSUITE:
        robosuite_only = {
            "fast_reset": True,
            "reuse_renderer": options.reuse_renderer,
            "reward_shaping": options.shaped,
        }
    elif options.shaped:
        raise SimulationError("shaped rewards are a robosuite option")
    return make_env(
        env_meta,
        camera_names=options.camera_names,
        camera_height=options.camera_height,
        camera_width=options.camera_width,
        use_depth=options.depth,
        **robosuite_only,
    )


def extract_one(env, df, demo: str, options: ExtractOptions) -> tuple[str, Any]:
    """`extract_demo` for a worker: ("ok", DemoResult) or ("error", one-line reason)."""
    try:
        return "ok", extract_demo(env, df, demo, options)
    except DemosetError as exc:
        return "error", exc.message
    except Exception as exc:  # noqa: BLE001 - any failure must name the demo, not kill the run
        last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" (at {os.path.basename(last.filename)}:{last.lineno})" if last else ""
        return "error", f"{type(exc).__name__}: {exc}{where}".replace("\n", " ")
