"""Replay determinism: do a demo's actions, applied from its first state, give its states?

Open-loop replay in the recording simulator reproduces the stored states to rounding when
the actions belong to the states. Contacts amplify tiny numeric differences (another
machine, another MuJoCo), so slow drift late in a demo is a warning; a large error within
the first few actions means the actions do not belong to the states (shifted by a step,
recorded with another controller, normalised differently), which is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from demoset.doctor.findings import Finding
from demoset.format import DemoFile
from demoset.format import constants as C

Progress = Callable[[int, int], None]
WARN_TOL = 1e-3
"""Largest state difference (max over the state vector) that counts as the same state."""
ERROR_TOL = 0.05
EARLY_STEPS = 10


def can_replay(df: DemoFile, demos: Sequence[str]) -> str | None:
    """Why the dataset cannot be replayed (None when it can)."""
    meta = df.env_meta
    if meta is None or meta.env_type != C.ENV_TYPE_ROBOSUITE:
        return "not a robosuite dataset"
    demo = demos[0]
    if not df.has(demo, C.STATES) or df.dataset(demo, C.STATES).shape[0] == 0:
        return "no simulator states stored"
    try:
        import robosuite  # noqa: F401
    except ImportError:
        return "robosuite is not installed (pip install 'demoset[sim]')"
    return None


def replay_findings(
    path: str,
    demos: Sequence[str],
    warn_tol: float = WARN_TOL,
    error_tol: float = ERROR_TOL,
    early_steps: int = EARLY_STEPS,
    progress: Progress | None = None,
) -> list[Finding]:
    """Replay `demos` open-loop and judge each one's divergence from its stored states."""
    from demoset.sim.playback import replay_dataset

    results = replay_dataset(path, demos=list(demos), atol=warn_tol, progress=progress)
    out: list[Finding] = []
    worst = max(results, key=lambda r: r.max_error)
    errors = [r.max_error for r in results]
    out.append(
        Finding(
            "replay",
            "info",
            f"replayed {len(results)} demos open-loop: largest state error median "
            f"{np.median(errors):.2g}, worst {worst.max_error:.2g} ({worst.demo})",
            details={r.demo: round(r.max_error, 8) for r in results},
        )
    )
    for r in results:
        early = r.errors[:early_steps]
        early = early[np.isfinite(early)]
        if early.size and early.max() > error_tol:
            step = int(np.argmax(r.errors[:early_steps] > error_tol))
            out.append(
                Finding(
                    "replay_divergence",
                    "error",
                    f"actions do not reproduce the states: error {early.max():.3g} within the "
                    f"first {early_steps} actions (at action {step})",
                    (r.demo,),
                    C.STATES,
                    step,
                    step + 1,
                )
            )
        elif r.first_divergence is not None:
            out.append(
                Finding(
                    "replay_divergence",
                    "warning",
                    f"open-loop replay drifts from the stored states from action "
                    f"{r.first_divergence} on (largest error {r.max_error:.3g})",
                    (r.demo,),
                    C.STATES,
                    r.first_divergence,
                    r.steps,
                )
            )
    return out
