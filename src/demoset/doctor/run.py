"""Runs the doctor's checks over a dataset (or a filter key's demos) and collects findings."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from demoset.doctor import checks
from demoset.doctor.findings import DoctorReport, Finding
from demoset.doctor.replay import can_replay, replay_findings
from demoset.format import open_dataset
from demoset.viz.sampling import sample_demos

Progress = Callable[[int, int], None]
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def diagnose(
    path: str | os.PathLike,
    filter_key: str | None = None,
    replay: bool = True,
    replay_demos: int | None = 5,
    frames_per_demo: int | None = 120,
    success_reward: float = checks.SUCCESS_REWARD,
    seed: int = 0,
    progress: Progress | None = None,
) -> DoctorReport:
    """Check a dataset's content; returns every finding, errors first.

    `replay_demos` demos (chosen with `seed`; None for all) are replayed in the simulator
    when the dataset is a robosuite one with states and robosuite is installed. Camera
    checks read `frames_per_demo` frames spread over each demo (None: every frame).
    """
    started = time.perf_counter()
    path = os.fspath(path)
    findings: list[Finding] = []
    checked: list[str] = []
    with open_dataset(path) as df:
        demos = df.demos_for(filter_key)
        if not demos:
            return DoctorReport(path, [], ["no demos selected"], time.perf_counter() - started)
        steps = [
            ("success (rewards)", lambda: checks.success_findings(df, demos, success_reward)),
            ("duplicate demos", lambda: checks.duplicate_demo_findings(df, demos)),
            ("action saturation", lambda: checks.saturation_findings(df, demos)),
            ("next_obs against obs", lambda: checks.next_obs_findings(df, demos)),
            ("constant observations", lambda: checks.constant_key_findings(df, demos)),
            ("stored statistics", lambda: checks.stored_stats_findings(df, demos)),
            (
                "camera frames (black, saturated, frozen, shared between demos)",
                lambda: checks.frame_findings(df, demos, frames_per_demo),
            ),
        ]
        why_not = can_replay(df, demos) if replay else "not asked (--no-replay)"
        total = len(steps) + (1 if why_not is None else 0)
        for i, (label, step) in enumerate(steps):
            findings.extend(step())
            checked.append(f"{label}: {len(demos)} demos")
            if progress:
                progress(i + 1, total)
    if why_not is None:
        chosen = sample_demos(demos, replay_demos, seed)
        findings.extend(replay_findings(path, chosen))
        checked.append(f"open-loop replay: {len(chosen)} of {len(demos)} demos")
        if progress:
            progress(total, total)
    else:
        checked.append(f"open-loop replay: skipped ({why_not})")
    findings.sort(key=lambda f: SEVERITY_ORDER.get(f.severity, 9))
    return DoctorReport(path, findings, checked, time.perf_counter() - started)
