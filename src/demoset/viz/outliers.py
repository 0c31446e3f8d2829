"""Finding odd demos: unusual lengths, actions pinned at their bounds, frozen or black frames.

Each check is a plain function over arrays that returns `Outlier`s, so it can be tested on
hand-made arrays and reused by the report and by scripts. Thresholds are arguments with
defaults that suit robomimic-style data (actions normalised to [-1, 1], 20 Hz control).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MAD_SCALE = 0.6745
"""Makes the median absolute deviation comparable to a standard deviation (normal data)."""

MEAN_AD_SCALE = 1.2533
"""Same for the mean absolute deviation, used when more than half the lengths are equal."""


@dataclass(frozen=True)
class Outlier:
    """One odd thing about one demo.

    `kind` is "long", "short", "actions_at_bound", "frozen_frames" or "black_frames";
    `start`/`stop` give the flagged steps (stop exclusive) when the finding is a run;
    `key` is the array concerned ("actions", "obs/agentview_image").
    """

    demo: str
    kind: str
    message: str
    key: str | None = None
    start: int | None = None
    stop: int | None = None
    score: float | None = None

    @property
    def h5path(self) -> str:
        return f"/data/{self.demo}" + (f"/{self.key}" if self.key else "")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["h5path"] = self.h5path
        return out


def robust_z(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Robust z-scores: distance from the median in units of the (scaled) median deviation.

    Unlike a mean/std z-score, one extreme value cannot hide itself by inflating the spread.
    When more than half the values are equal the median deviation is 0; the mean absolute
    deviation is used instead, and all zeros come back when every value is the same.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    median = np.median(x)
    dev = np.abs(x - median)
    mad = np.median(dev)
    if mad > 0:
        return MAD_SCALE * (x - median) / mad
    mean_ad = dev.mean()
    if mean_ad > 0:
        return (x - median) / (MEAN_AD_SCALE * mean_ad)
    return np.zeros_like(x)


def length_outliers(
    demos: Sequence[str],
    lengths: Sequence[int] | np.ndarray,
    threshold: float = 3.5,
    min_relative: float = 0.2,
    min_demos: int = 5,
) -> list[Outlier]:
    """Demos much longer or shorter than the rest.

    A demo is flagged when its robust z-score is beyond `threshold` and it also differs
    from the median length by at least `min_relative` (20 %): tightly clustered scripted
    demos should not flag a demo that is only a few steps longer. Fewer than `min_demos`
    demos give no verdict.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(demos) < min_demos:
        return []
    z = robust_z(lengths)
    median = float(np.median(lengths))
    out = []
    for demo, n, score in zip(demos, lengths.tolist(), z.tolist()):
        if abs(score) <= threshold or abs(n - median) < min_relative * max(median, 1.0):
            continue
        kind = "long" if score > 0 else "short"
        ratio = n / median if median else float("inf")
        out.append(
            Outlier(
                demo,
                kind,
                f"{n} steps, {ratio:.1f}x the median of {median:g} (robust z {score:+.1f})",
                score=round(float(score), 2),
            )
        )
    return out


def at_bound(
    actions: np.ndarray, low: float = -1.0, high: float = 1.0, tol: float = 1e-6
) -> np.ndarray:
    """Boolean (N, D): where an action sits at (or beyond) its bound."""
    a = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)
    return (a >= high - tol) | (a <= low + tol)


def longest_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a boolean (N, D) array: length and start of the longest run of True."""
    mask = np.asarray(mask, dtype=bool).reshape(len(mask), -1)
    n, d = mask.shape
    best_len = np.zeros(d, dtype=np.int64)
    best_start = np.zeros(d, dtype=np.int64)
    padded = np.zeros(n + 2, dtype=np.int8)
    for j in range(d):
        padded[1:-1] = mask[:, j]
        edges = np.diff(padded)
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1)
        if starts.size:
            k = int(np.argmax(stops - starts))
            best_len[j] = stops[k] - starts[k]
            best_start[j] = starts[k]
    return best_len, best_start


def switch_like_dims(bound_fraction: np.ndarray, limit: float = 0.5) -> list[int]:
    """Action dimensions at a bound most of the time across the dataset (e.g. a gripper).

    robomimic grippers are commanded as -1 / +1, so runs at the bound are normal for them
    and are not flagged.
    """
    return [int(j) for j in np.flatnonzero(np.asarray(bound_fraction) >= limit)]


def action_bound_outliers(
    demo: str,
    actions: np.ndarray,
    min_run: int = 20,
    skip_dims: Sequence[int] = (),
    low: float = -1.0,
    high: float = 1.0,
) -> list[Outlier]:
    """A demo whose actions stay pinned at a bound for `min_run` steps or more.

    Long saturated runs usually mean clipping (a controller asking for more than the
    normalised range) or a stuck input device. One outlier per demo lists every such
    dimension; `skip_dims` (switch-like dimensions) are ignored.
    """
    actions = np.asarray(actions)
    if actions.size == 0:
        return []
    flat = actions.reshape(len(actions), -1)
    mask = at_bound(flat, low, high)
    run_len, run_start = longest_runs(mask)
    parts = []
    worst = None
    for j in range(flat.shape[1]):
        if j in skip_dims or run_len[j] < min_run:
            continue
        start, length = int(run_start[j]), int(run_len[j])
        value = high if flat[start, j] >= high - 1e-6 else low
        parts.append(f"dim {j} at {value:+g} for {length} steps ({start}-{start + length - 1})")
        if worst is None or length > worst[1]:
            worst = (start, length)
    if not parts:
        return []
    return [
        Outlier(
            demo,
            "actions_at_bound",
            "; ".join(parts),
            key="actions",
            start=worst[0],
            stop=worst[0] + worst[1],
            score=float(worst[1]),
        )
    ]


def black_frames(frames: np.ndarray, level: float = 4.0) -> np.ndarray:
    """Boolean per frame: mean brightness below `level` (of 255): a black or missing render."""
    frames = np.asarray(frames)
    if frames.size == 0:
        return np.zeros(len(frames), dtype=bool)
    return frames.reshape(len(frames), -1).mean(axis=1, dtype=np.float64) < level


def repeated_frames(frames: np.ndarray) -> np.ndarray:
    """Boolean per frame: identical, byte for byte, to the frame before it (first is False)."""
    frames = np.asarray(frames)
    out = np.zeros(len(frames), dtype=bool)
    if len(frames) > 1:
        flat = frames.reshape(len(frames), -1)
        out[1:] = np.all(flat[1:] == flat[:-1], axis=1)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) positions of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]])
    edges = np.diff(padded)
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def frame_outliers(
    demo: str,
    key: str,
    indices: np.ndarray,
    frames: np.ndarray,
    min_frozen: int = 20,
    black_level: float = 4.0,
) -> list[Outlier]:
    """Black frames and frozen stretches among frames read at step `indices` of one camera.

    `indices` may skip steps (a sample of a long demo): a frozen stretch is then sampled
    frames that are all identical, and the steps between them are assumed frozen too; the
    message says how many steps apart the samples were. Black frames are reported on their
    own (any at all is worth a look) and are not counted again as frozen.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return []
    out: list[Outlier] = []
    stride = int(np.max(np.diff(indices))) if indices.size > 1 else 1
    sampled = f" (sampled every {stride} steps)" if stride > 1 else ""

    black = black_frames(frames, black_level)
    if black.any():
        runs = _runs(black)
        start, stop = max(runs, key=lambda r: r[1] - r[0])
        first, last = int(indices[start]), int(indices[stop - 1])
        out.append(
            Outlier(
                demo,
                "black_frames",
                f"{int(black.sum())} of {indices.size} frames checked are black{sampled}; "
                f"longest run steps {first}-{last}",
                key=key,
                start=first,
                stop=last + 1,
                score=float(black.sum()),
            )
        )

    frozen = repeated_frames(frames) & ~black
    best = None
    for start, stop in _runs(frozen):
        first, last = int(indices[start - 1]), int(indices[stop - 1])
        steps = last - first + 1
        if steps >= min_frozen and (best is None or steps > best[2]):
            best = (first, last, steps)
    if best is not None:
        first, last, steps = best
        out.append(
            Outlier(
                demo,
                "frozen_frames",
                f"identical frames for {steps} steps ({first}-{last}){sampled}",
                key=key,
                start=first,
                stop=last + 1,
                score=float(steps),
            )
        )
    return out
