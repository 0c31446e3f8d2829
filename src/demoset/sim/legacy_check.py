"""Which recordings' scenes robosuite 1.5 can rebuild, decided before any work starts.

robosuite 0.x (RoboTurk Pilot, robomimic's converted RoboTurk files) named its tasks after
the robot (`SawyerLift`, `SawyerPickPlaceCan`, `BaxterPegInHole`), wrote models for MuJoCo
1.5 through mujoco-py and took arguments robosuite 1.x dropped (`gripper_visualization`,
`camera_name`). None of that exists in robosuite 1.x, so such files convert and serve
their stored low-dim values, but observation extraction, playback and rollouts cannot
rebuild their scene. This module says so in one line instead of a robosuite traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from demoset.errors import SimulationError
from demoset.sim.legacy_assets import parse_version

_V0_ENV_NAME = re.compile(r"^(Sawyer|Baxter)[A-Z]")
_V0_ONLY_KWARGS = ("gripper_visualization", "camera_name", "camera_depth")

RECORDED_VERSION_KEY = "recorded_env_version"
"""env_args key for the robosuite version whose assets a file's stored models name."""


def recorded_version(extra: Mapping[str, Any]) -> str | None:
    """The robosuite version that recorded a dataset, from its env_args' extra keys."""
    for key in (RECORDED_VERSION_KEY, "env_version"):
        value = extra.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def v0_recording(env_name: str, version: str | None, env_kwargs: Mapping[str, Any]) -> str | None:
    """The robosuite 0.x version (or "0.x") that recorded a dataset, or None for 1.x."""
    parsed = parse_version(version)
    if parsed is not None:
        return version if parsed[0] == 0 else None
    if _V0_ENV_NAME.match(env_name) or any(k in env_kwargs for k in _V0_ONLY_KWARGS):
        return "0.x (RoboTurk Pilot era)"
    return None


def check_scene_rebuildable(meta, path: str | None = None) -> None:
    """Raise one line when a robosuite dataset's scene cannot be rebuilt by robosuite 1.x."""
    from demoset.format import ENV_TYPE_ROBOSUITE

    if meta.env_type != ENV_TYPE_ROBOSUITE:
        return
    old = v0_recording(meta.env_name, recorded_version(meta.extra), meta.env_kwargs)
    if old is not None:
        raise SimulationError(
            f"{meta.env_name} was recorded with robosuite {old}, whose scenes robosuite 1.x "
            "cannot rebuild: conversion and its stored low-dim data work, observation "
            "extraction, playback and rollouts do not",
            path,
            "/data.attrs[env_args]",
        )
