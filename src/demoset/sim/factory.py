"""make_env: an environment from a dataset's `env_args` (robosuite or gymnasium)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from demoset.errors import SimulationError
from demoset.format import (
    ENV_TYPE_GYM,
    ENV_TYPE_IG_MOMART,
    ENV_TYPE_ROBOSUITE,
    EnvMeta,
    env_meta_from_dict,
)
from demoset.sim.base import Env


def as_env_meta(env_meta: EnvMeta | Mapping | str) -> EnvMeta:
    """An EnvMeta from an EnvMeta, an env_args dict or env_args JSON text."""
    if isinstance(env_meta, EnvMeta):
        return env_meta
    if isinstance(env_meta, (str, bytes)):
        try:
            env_meta = json.loads(env_meta)
        except ValueError as exc:
            raise SimulationError(f"env_args is not JSON ({exc})") from None
    if not isinstance(env_meta, Mapping):
        raise SimulationError(
            f"env_args must be a dict or JSON text, got {type(env_meta).__name__}"
        )
    return env_meta_from_dict(dict(env_meta))


def make_env(
    env_meta: EnvMeta | Mapping | str,
    render_offscreen: bool = False,
    camera_names: Sequence[str] = (),
    camera_height: int = 84,
    camera_width: int = 84,
    use_depth: bool = False,
    **overrides: Any,
) -> Env:
    """Create the environment a dataset was recorded in.

    `camera_names` are the cameras rendered into every observation (none by default, which
    is fastest); camera settings stored in env_kwargs are replaced by these arguments.
    `render_offscreen` allows `render()` without camera observations. `overrides` replace
    env_kwargs entries (e.g. `reward_shaping=True`, `horizon=400`).
    """
    meta = as_env_meta(env_meta)
    kwargs = dict(meta.env_kwargs)
    kwargs.update(overrides)
    kwargs.pop("env_name", None)  # robosuite's env_info repeats it inside env_kwargs
    for key in ("render_offscreen", "camera_names", "camera_height", "camera_width", "use_depth"):
        kwargs.pop(key, None)  # decided by this call's arguments, not by what was stored
    if isinstance(camera_names, str):
        camera_names = (camera_names,)
    if meta.env_type == ENV_TYPE_ROBOSUITE:
        from demoset.sim.legacy_check import check_scene_rebuildable, recorded_version
        from demoset.sim.robosuite_env import RobosuiteEnv

        check_scene_rebuildable(meta)
        kwargs.setdefault("recorded_version", recorded_version(meta.extra))
        return RobosuiteEnv(
            meta.env_name,
            render_offscreen=render_offscreen,
            camera_names=tuple(camera_names),
            camera_height=camera_height,
            camera_width=camera_width,
            use_depth=use_depth,
            **kwargs,
        )
    if meta.env_type == ENV_TYPE_GYM:
        if camera_names:
            raise SimulationError(
                "camera observations are only supported for robosuite environments"
            )
        from demoset.sim.gym_env import GymEnv

        return GymEnv(
            meta.env_name, render_offscreen=render_offscreen, use_depth=use_depth, **kwargs
        )
    if meta.env_type == ENV_TYPE_IG_MOMART:
        raise SimulationError("iGibson (MOMART, env type 3) environments are not supported")
    raise SimulationError(f"unknown environment type {meta.env_type} in env_args")


def cameras_from_obs_keys(keys: Sequence[str]) -> tuple[list[str], bool]:
    """Camera names and whether depth is used, from observation keys like `agentview_image`."""
    cameras: list[str] = []
    depth = False
    for key in keys:
        if key.endswith("_image"):
            name = key[: -len("_image")]
        elif key.endswith("_depth"):
            name = key[: -len("_depth")]
            depth = True
        else:
            continue
        if name not in cameras:
            cameras.append(name)
    return cameras, depth
