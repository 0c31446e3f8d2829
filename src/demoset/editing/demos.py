"""Edits of which demos, and which steps of them, a dataset keeps: remove-demos and trim."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from demoset.editing.rewrite import Progress, RewriteResult, replace_dataset, rewrite, step_datasets
from demoset.errors import ConfigError, DemoNotFoundError
from demoset.format import DemoFile, open_dataset
from demoset.format import constants as C

SUCCESS_REWARD = 1.0
"""A step whose reward reaches this counts as success (robosuite's sparse reward is 1)."""


def select_demos(
    path: str | os.PathLike,
    *,
    demos: Iterable[str] | None = None,
    filter_key: str | None = None,
    shorter_than: int | None = None,
    longer_than: int | None = None,
    no_success: bool = False,
    success_reward: float = SUCCESS_REWARD,
) -> list[str]:
    """Demos matching ANY of the given criteria, in file order.

    `no_success` picks demos whose rewards never reach `success_reward`; a dataset without
    rewards cannot answer that and is refused.
    """
    path = os.fspath(path)
    with open_dataset(path) as df:
        chosen: set[str] = set()
        if demos is not None:
            known = set(df.demos)
            for d in demos:
                if d not in known:
                    raise DemoNotFoundError(f"no demo named {d!r}", path, f"/data/{d}")
                chosen.add(d)
        if filter_key is not None:
            chosen.update(df.demos_for(filter_key))
        if shorter_than is not None or longer_than is not None:
            for d, n in zip(df.demos, df.lengths()):
                if (shorter_than is not None and n < shorter_than) or (
                    longer_than is not None and n > longer_than
                ):
                    chosen.add(d)
        if no_success:
            for d in df.demos:
                if not df.has(d, C.REWARDS):
                    raise ConfigError(
                        "--no-success needs rewards; this demo has none", path, f"/data/{d}"
                    )
                if not np.any(df.read(d, C.REWARDS) >= success_reward):
                    chosen.add(d)
        return [d for d in df.demos if d in chosen]


def remove_demos(
    path: str | os.PathLike,
    out: str | os.PathLike,
    demos: Iterable[str],
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteResult:
    """Write `out` without `demos`; filter keys lose them too (an emptied key is dropped)."""
    remove = set(demos)
    with open_dataset(path) as df:
        if remove and remove >= set(df.demos):
            raise ConfigError("that would remove every demo; nothing was written", path)
    return rewrite(path, out, remove=remove, overwrite=overwrite, progress=progress)


def idle_run(actions: np.ndarray, state: np.ndarray | None, tol: float, from_end: bool) -> int:
    """How many frames at one end change neither the action nor the state, within `tol`.

    A frame is idle when its action and state equal the previous frame's. At the start the
    run counts frames 1.. equal to their predecessor (so the last still frame is kept); at
    the end it counts the final frames equal to their predecessor.
    """
    n = len(actions)
    if n < 2:
        return 0
    flat = [actions.reshape(n, -1).astype(np.float64)]
    if state is not None and state.size:
        flat.append(state.reshape(n, -1).astype(np.float64))
    step_change = np.max(np.abs(np.diff(np.concatenate(flat, axis=1), axis=0)), axis=1)
    still = step_change <= tol  # still[t]: frame t+1 equals frame t
    order = still[::-1] if from_end else still
    moving = np.flatnonzero(~order)
    return int(moving[0]) if moving.size else n - 1


def trim_demos(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    start: int = 0,
    end: int = 0,
    idle_start: bool = False,
    idle_end: bool = False,
    idle_tol: float = 1e-6,
    demos: Iterable[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteResult:
    """Cut frames at the start and/or end of demos (all, or `demos`) into a new file.

    `start`/`end` cut a fixed count; `idle_start`/`idle_end` cut the frames where neither
    the action nor the simulator state (low-dim observations when there are no states)
    changes. Every per-step array is cut the same way, so obs/next_obs stay paired.
    """
    if start < 0 or end < 0:
        raise ConfigError("--start and --end count frames to cut; they cannot be negative")
    path = os.fspath(path)
    with open_dataset(path) as df:
        targets = set(df.demos if demos is None else demos)
        for d in targets:
            df.group(d)  # DemoNotFoundError for unknown names

    def cut(df: DemoFile, demo: str, grp) -> None:
        if demo not in targets:
            return
        n = df.num_samples(demo)
        head, tail = start, end
        if idle_start or idle_end:
            actions = df.read(demo, C.ACTIONS)[:n]
            state = _idle_state(df, demo, n)
            if idle_start:
                head += idle_run(actions[head:], _part(state, head, None), idle_tol, False)
            if idle_end:
                tail += idle_run(actions[: n - tail], _part(state, None, n - tail), idle_tol, True)
        if head + tail >= n:
            raise ConfigError(
                f"cutting {head} + {tail} frames leaves nothing of a {n}-step demo",
                path,
                f"/data/{demo}",
            )
        if head == 0 and tail == 0:
            return
        for name in step_datasets(grp, n):
            replace_dataset(grp, name, grp[name][head : n - tail])
        result_notes[demo] = f"cut {head} + {tail} frames"

    result_notes: dict[str, str] = {}
    result = rewrite(path, out, edit_demo=cut, overwrite=overwrite, progress=progress)
    result.changed = result_notes
    return result


def _idle_state(df: DemoFile, demo: str, n: int) -> np.ndarray | None:
    """The state idleness is judged on: `states`, else every low-dim observation."""
    if df.has(demo, C.STATES) and df.dataset(demo, C.STATES).shape[0] >= n:
        states = df.read(demo, C.STATES)[:n]
        if states.size:
            return states
    parts = [
        df.read(demo, f"{C.OBS}/{key}")[:n].reshape(n, -1)
        for key, info in df.obs_keys(demo).items()
        if not info.is_image
    ]
    return np.concatenate(parts, axis=1) if parts else None


def _part(state: np.ndarray | None, lo: int | None, hi: int | None) -> np.ndarray | None:
    return None if state is None else state[lo:hi]
