"""Playing demos back in the simulator: from stored states, or open-loop from stored actions.

Open-loop replay resets the simulator to a demo's model and first state and applies its
actions one by one. After action t the simulator state is compared with the stored state
t+1; the first action after which they differ by more than `atol` is where the replay
diverged (contact-rich demos recorded on another machine or simulator version drift).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demoset.errors import SimulationError
from demoset.format import constants as C

FrameFn = Callable[[int], None]
"""Called with the step index after the simulator reached that step (for rendering)."""


@dataclass
class ReplayResult:
    """How an open-loop replay of one demo went."""

    demo: str
    steps: int
    first_divergence: int | None
    """Index of the first action after which the state differed from the stored next state."""
    max_error: float
    errors: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    """Per action t, the largest absolute difference to stored state t+1 (NaN without states)."""
    success: bool = False

    @property
    def diverged(self) -> bool:
        return self.first_divergence is not None


def initial_state(df, demo: str) -> dict[str, Any]:
    """The reset_to() argument for a demo's start: model, ep_meta and first state."""
    attrs = df.demo_attrs(demo)
    state: dict[str, Any] = {}
    if attrs.get(C.ATTR_MODEL_FILE):
        state["model"] = attrs[C.ATTR_MODEL_FILE]
    if attrs.get(C.ATTR_EP_META):
        state["ep_meta"] = attrs[C.ATTR_EP_META]
    if df.has(demo, C.STATES) and df.dataset(demo, C.STATES).shape[0] > 0:
        state["states"] = df.dataset(demo, C.STATES)[0]
    return state


def replay_actions(
    env,
    actions: np.ndarray,
    states: np.ndarray | None = None,
    start: dict[str, Any] | None = None,
    atol: float = 1e-6,
    on_step: FrameFn | None = None,
    demo: str = "",
) -> ReplayResult:
    """Reset to `start` (model / ep_meta / first state) and apply `actions` open-loop.

    With `states`, each reached state is compared with the stored one. `on_step(t)` is
    called at the start (t=0) and after each action (t = 1..N), e.g. to render a frame.
    """
    actions = np.asarray(actions)
    if start:
        env.reset_to(start)
    else:
        env.reset()
    if on_step is not None:
        on_step(0)
    n = len(actions)
    errors = np.full(n, np.nan)
    first = None
    for t in range(n):
        env.step(actions[t])
        if states is not None and t + 1 < len(states):
            reached = np.asarray(env.get_state()["states"])
            stored = np.asarray(states[t + 1])
            if reached.shape != stored.shape:
                raise SimulationError(
                    f"simulator state has {reached.size} values, stored states {stored.size}"
                )
            errors[t] = float(np.max(np.abs(reached - stored))) if reached.size else 0.0
            if first is None and errors[t] > atol:
                first = t
        if on_step is not None:
            on_step(t + 1)
    finite = errors[np.isfinite(errors)]
    return ReplayResult(
        demo=demo,
        steps=n,
        first_divergence=first,
        max_error=float(finite.max()) if finite.size else 0.0,
        errors=errors,
        success=env.is_success(),
    )


def replay_demo(
    env, df, demo: str, atol: float = 1e-6, on_step: FrameFn | None = None
) -> ReplayResult:
    """Open-loop replay of one demo of an open dataset, compared with its stored states."""
    actions = df.read(demo, C.ACTIONS)
    states = df.read(demo, C.STATES) if df.has(demo, C.STATES) else None
    if states is not None and states.size == 0:
        states = None
    return replay_actions(env, actions, states, initial_state(df, demo), atol, on_step, demo)


def replay_dataset(
    path: str,
    demos: list[str] | None = None,
    filter_key: str | None = None,
    atol: float = 1e-6,
    progress: Callable[[int, int], None] | None = None,
) -> list[ReplayResult]:
    """Open-loop replay of every (or the given) demo of a dataset; one result per demo."""
    from demoset.format import open_dataset
    from demoset.sim.extract_demo import source_env_meta
    from demoset.sim.factory import make_env

    with open_dataset(path) as df:
        demos = demos if demos is not None else df.demos_for(filter_key)
        env = make_env(source_env_meta(df))
        try:
            results = []
            for i, demo in enumerate(demos):
                results.append(replay_demo(env, df, demo, atol))
                if progress is not None:
                    progress(i + 1, len(demos))
            return results
        finally:
            env.close()
