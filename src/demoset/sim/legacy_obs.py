"""Observables whose definition robosuite 1.5 changed, restored for older recordings.

robosuite 1.5 builds every "object to end effector" observable as object minus
end-effector position. robosuite 1.0-1.4 did the same everywhere but in Lift, whose
`gripper_to_cube_pos` was end-effector minus cube (checked against robosuite 1.4.1's
sources for every manipulation task). For a Lift recording of robosuite <= 1.4 the sign
is turned back, so the extracted `object` vector is the one policies trained on the old
data expect (the fixture tests compare it with robosuite 1.4.1's values).
"""

from __future__ import annotations

from typing import Any

LEGACY_NEGATED = {"Lift": ("gripper_to_cube_pos",)}
"""Per task: observables robosuite <= 1.4 defined with the opposite sign."""


def _negate(observables: dict, suffixes: tuple[str, ...]) -> list[str]:
    from robosuite.utils.observables import sensor

    changed = []
    for name, observable in observables.items():
        if not name.endswith(suffixes):
            continue
        original = observable._sensor

        def negated(obs_cache, _original=original):
            return -_original(obs_cache)

        negated.__name__ = name
        observable.set_sensor(sensor(modality=observable.modality)(negated))
        changed.append(name)
    return changed


def restore_legacy_observables(env: Any, env_name: str) -> list[str]:
    """Negate, in a robosuite 1.5 environment, the observables <= 1.4 defined the other way.

    Also wraps the environment's `_setup_observables`, which robosuite calls again on every
    hard reset to rebuild the sensors. Returns the observable names changed.
    """
    suffixes = LEGACY_NEGATED.get(env_name, ())
    if not suffixes:
        return []
    setup = env._setup_observables

    def setup_legacy():
        observables = setup()
        _negate(observables, suffixes)
        return observables

    env._setup_observables = setup_legacy
    return _negate(env._observables, suffixes)
