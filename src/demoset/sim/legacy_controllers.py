"""robosuite <= 1.4 environment arguments as robosuite 1.5 takes them.

robosuite 1.0-1.4 stored one arm controller config per dataset (`{"type": "OSC_POSE",
"control_delta": true, ...}`, applied to every arm of every robot); robosuite 1.5 builds a
composite controller per robot whose `body_parts` each carry a part controller and the
gripper's. The mapping (documented in docs/sim.md) keeps what the recording did:

- every arm of the robot (`right`, plus `left` for two-armed robots) gets the stored part
  config, and its gripper the `GRIP` controller robosuite 1.0-1.4 always used;
- the rest of the robot (base, torso, head, legs) keeps robosuite 1.5's default
  composite config for that robot (`default_<robot>.json`), as robosuite's own
  `refactor_composite_controller_config` does;
- `control_delta` becomes `input_type` ("delta" / "absolute") for OSC and joint-position
  controllers (IK keeps `control_delta`, which it still reads);
- OSC controllers read their deltas in the world frame (`input_ref_frame="world"`), as
  every robosuite <= 1.4 OSC did; robosuite 1.5's default is the robot base frame;
- `lite_physics=False` (robosuite 1.5 otherwise skips a `forward` per substep, which
  robosuite documents as breaking compatibility with <= 1.4.1 datasets);
- the renamed environment argument `mount_types` becomes `base_types`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from demoset.sim.legacy_assets import parse_version

PART_CONTROLLER_TYPES = (
    "JOINT_VELOCITY",
    "JOINT_TORQUE",
    "JOINT_POSITION",
    "OSC_POSITION",
    "OSC_POSE",
    "IK_POSE",
)
"""The controller types robosuite <= 1.4 stored as a whole-robot config."""

_INPUT_TYPE_CONTROLLERS = ("OSC_POSE", "OSC_POSITION", "JOINT_POSITION")
_TWO_ARMED = ("Baxter", "GR1", "Tiago")
_RENAMED_KWARGS = {"mount_types": "base_types"}


def is_part_config(config: Any) -> bool:
    """Whether a controller config is robosuite <= 1.4's single part config."""
    return (
        isinstance(config, Mapping)
        and "body_parts" not in config
        and config.get("type") in PART_CONTROLLER_TYPES
    )


def is_legacy_version(version: str | None) -> bool:
    """Whether a recording version is robosuite 1.4 or older (None: not known)."""
    parsed = parse_version(version)
    return parsed is not None and parsed[:2] < (1, 5)


def modern_part_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """One robosuite <= 1.4 arm controller config in robosuite 1.5's terms."""
    part = copy.deepcopy(dict(config))
    kind = part.get("type")
    if kind in _INPUT_TYPE_CONTROLLERS:
        delta = part.pop("control_delta", True)
        part.setdefault("input_type", "delta" if delta else "absolute")
    if kind in ("OSC_POSE", "OSC_POSITION"):
        part.setdefault("input_ref_frame", "world")
    part["gripper"] = {"type": "GRIP"}
    return part


def _arms(robot: str) -> list[str]:
    return ["right", "left"] if robot.startswith(_TWO_ARMED) else ["right"]


def composite_config(config: Mapping[str, Any], robot: str) -> dict[str, Any]:
    """robosuite 1.5's composite controller config for `robot` from a <= 1.4 part config."""
    from robosuite.controllers.composite.composite_controller_factory import (
        load_composite_controller_config,
    )

    try:
        composite = load_composite_controller_config(robot=robot)
    except (OSError, ValueError, AssertionError):
        composite = None
    if not composite:
        composite = {"type": "BASIC", "body_parts": {}}
    part = modern_part_config(config)
    for arm in _arms(robot):
        composite["body_parts"][arm] = copy.deepcopy(part)
    return composite


def _robot_names(robots: Any) -> list[str]:
    if isinstance(robots, str):
        return [robots]
    if isinstance(robots, (list, tuple)) and robots:
        return [str(r) for r in robots]
    return []


def modern_env_kwargs(env_kwargs: Mapping[str, Any], recorded_version: str | None) -> dict:
    """env_kwargs of a robosuite <= 1.4 recording (by version or by controller config) for 1.5.

    Arguments of robosuite 1.5 recordings come back unchanged.
    """
    kwargs = copy.deepcopy(dict(env_kwargs))
    controllers = kwargs.get("controller_configs")
    legacy_controller = is_part_config(controllers)
    if not (legacy_controller or is_legacy_version(recorded_version)):
        return kwargs
    for old, new in _RENAMED_KWARGS.items():
        if old in kwargs:
            kwargs.setdefault(new, kwargs.pop(old))
    kwargs.setdefault("lite_physics", False)
    if legacy_controller:
        robots = _robot_names(kwargs.get("robots"))
        configs = [composite_config(controllers, robot) for robot in robots or ["Panda"]]
        kwargs["controller_configs"] = configs[0] if len(configs) == 1 else configs
    return kwargs
