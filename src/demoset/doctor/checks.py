"""The doctor's checks on the arrays themselves (no simulator): each returns findings.

These look for what breaks training without any error: demos that never succeed, the same
demo twice, actions pinned at their bounds, next_obs that is not the next observation,
observations that never change, and camera frames that are black, saturated, frozen or
copied from another demo.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from demoset.doctor.findings import Finding
from demoset.format import DemoFile
from demoset.format import constants as C
from demoset.viz import outliers
from demoset.viz.collect import camera_keys, low_dim_keys
from demoset.viz.sampling import read_rows, spaced_indices

SUCCESS_REWARD = 1.0
SATURATED_LEVEL = 251.0
"""Mean brightness (of 255) above which a frame counts as saturated (washed out, white)."""


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def success_findings(
    df: DemoFile, demos: Sequence[str], success_reward: float = SUCCESS_REWARD
) -> list[Finding]:
    """Demos whose rewards never reach success (only where the dataset has rewards)."""
    have = [d for d in demos if df.has(d, C.REWARDS)]
    if not have:
        return []
    best = {d: float(np.max(df.read(d, C.REWARDS), initial=-np.inf)) for d in have}
    if all(v == 0 for v in best.values()):
        return [
            Finding(
                "no_success",
                "info",
                "every reward is 0: success cannot be told from this dataset's rewards",
                key=C.REWARDS,
            )
        ]
    failed = tuple(d for d in have if best[d] < success_reward)
    if not failed:
        return []
    severity = "error" if len(failed) == len(have) else "warning"
    return [
        Finding(
            "no_success",
            severity,
            f"{len(failed)} of {len(have)} demos never reach success (reward >= {success_reward:g})",
            failed,
            key=C.REWARDS,
        )
    ]


def duplicate_demo_findings(df: DemoFile, demos: Sequence[str]) -> list[Finding]:
    """Demos whose actions (and states, where stored) are the same as an earlier demo's."""
    seen: dict[str, str] = {}
    out = []
    for d in demos:
        parts = [df.read(d, C.ACTIONS)]
        if df.has(d, C.STATES):
            parts.append(df.read(d, C.STATES))
        key = _digest(*parts)
        if key in seen:
            out.append(
                Finding(
                    "duplicate_demo",
                    "warning",
                    f"{d} repeats {seen[key]} (same actions and states)",
                    (seen[key], d),
                    key=C.ACTIONS,
                )
            )
        else:
            seen[key] = d
    return out


def saturation_findings(
    df: DemoFile, demos: Sequence[str], warn_share: float = 0.1, switch_share: float = 0.5
) -> list[Finding]:
    """Share of steps each action dimension sits at -1 or +1.

    Dimensions at a bound most of the time are switch-like (a gripper) and fine; a
    continuous dimension at its bound for `warn_share` of the steps or more suggests the
    controller asked for more than the normalised range and was clipped.
    """
    counts = None
    total = 0
    for d in demos:
        mask = outliers.at_bound(df.read(d, C.ACTIONS))
        counts = mask.sum(axis=0) if counts is None else counts + mask.sum(axis=0)
        total += len(mask)
    if counts is None or total == 0:
        return []
    share = counts / total
    text = ", ".join(f"{j}: {s:.1%}" for j, s in enumerate(share))
    out = [
        Finding(
            "action_saturation",
            "info",
            f"share of steps at ±1 per action dimension: {text}",
            key=C.ACTIONS,
            details={"share": [round(float(s), 4) for s in share]},
        )
    ]
    clipped = [j for j, s in enumerate(share) if warn_share <= s < switch_share]
    if clipped:
        out.append(
            Finding(
                "action_saturation",
                "warning",
                "action "
                + ", ".join(f"dim {j} at ±1 for {share[j]:.0%} of steps" for j in clipped)
                + " (clipped by the normalisation?)",
                key=C.ACTIONS,
            )
        )
    return out


def next_obs_findings(df: DemoFile, demos: Sequence[str], atol: float = 1e-6) -> list[Finding]:
    """next_obs[t] should equal obs[t + 1]; a systematic difference is a shifted dataset."""
    systematic, partial = defaultdict(list), defaultdict(list)
    for d in demos:
        n = df.num_samples(d)
        if n < 2:
            continue
        for key in low_dim_keys(df, d):
            nxt = f"{C.NEXT_OBS}/{key[len(C.OBS) + 1 :]}"
            if not df.has(d, nxt):
                continue
            obs, next_obs = df.read(d, key)[:n], df.read(d, nxt)[:n]
            diff = np.abs(next_obs[:-1].astype(np.float64) - obs[1:].astype(np.float64))
            bad = diff.reshape(n - 1, -1).max(axis=1) > atol
            if bad.mean() > 0.5:
                systematic[key].append(d)
            elif bad.any():
                partial[key].append(d)
    out = []
    for key, names in systematic.items():
        out.append(
            Finding(
                "next_obs_mismatch",
                "error",
                f"next_obs is not the next step's obs for most steps of {len(names)} demos",
                tuple(names),
                key=key,
            )
        )
    for key, names in partial.items():
        out.append(
            Finding(
                "next_obs_mismatch",
                "warning",
                f"next_obs differs from the next step's obs at some steps of {len(names)} demos",
                tuple(names),
                key=key,
            )
        )
    return out


def constant_key_findings(df: DemoFile, demos: Sequence[str]) -> list[Finding]:
    """Low-dim observations that never change over the selected demos."""
    out = []
    for key in low_dim_keys(df, demos[0]):
        lo = hi = None
        for d in demos:
            if not df.has(d, key):
                continue
            a = df.read(d, key)
            if not len(a):
                continue
            a = a.reshape(len(a), -1)
            lo = a.min(axis=0) if lo is None else np.minimum(lo, a.min(axis=0))
            hi = a.max(axis=0) if hi is None else np.maximum(hi, a.max(axis=0))
        if lo is None:
            continue
        flat = np.flatnonzero(lo == hi)
        if flat.size == lo.size:
            out.append(
                Finding(
                    "constant_key",
                    "warning",
                    "never changes: it carries no information (its normalised std is robomimic's 1e-3 floor)",
                    key=key,
                )
            )
        elif flat.size:
            out.append(
                Finding(
                    "constant_key",
                    "info",
                    f"dimensions {', '.join(map(str, flat.tolist()))} never change",
                    key=key,
                )
            )
    return out


def stored_stats_findings(df: DemoFile, demos: Sequence[str]) -> list[Finding]:
    """Statistics stored in the file that no longer describe the arrays.

    They are written with the demos; a tool that changes array values in place without
    storing them again leaves them stale, and the loader would normalise with them.
    """
    from demoset.format import read_stats, stats_keys, stats_of_arrays

    stale: dict[str, list[str]] = defaultdict(list)
    lengths = [int(n) for n in df.lengths(list(demos))]
    for key in stats_keys(df, demos[0]):
        stored = read_stats(df.h5, key, demos, lengths)
        if stored is None:
            continue
        for d, n, s in zip(demos, lengths, stored):
            fresh = stats_of_arrays({key: df.read(d, key)}, n).get(key)
            same = fresh is not None and all(
                np.allclose(getattr(fresh, f), getattr(s, f), rtol=1e-9, atol=1e-12)
                for f in ("mean", "m2", "min", "max")
            )
            if not same:
                stale[key].append(d)
    return [
        Finding(
            "stale_stats",
            "error",
            f"the statistics stored for {len(names)} demos do not match the arrays (changed "
            "in place?); `demoset stats FILE --store` stores them again",
            tuple(names),
            key=key,
        )
        for key, names in stale.items()
    ]


def frame_findings(
    df: DemoFile,
    demos: Sequence[str],
    frames_per_demo: int | None = 120,
    frozen_run: int = 20,
    black_level: float = 4.0,
    saturated_level: float = SATURATED_LEVEL,
    shared_share: float = 0.5,
) -> list[Finding]:
    """Black, saturated and frozen frames per camera, and frames copied between demos.

    `frames_per_demo` frames spread over each demo are read (None reads every frame). Two
    demos sharing `shared_share` or more of their (non-black, non-saturated) frames byte
    for byte are reported: a camera stream written into the wrong demo.
    """
    out: list[Finding] = []
    for key in camera_keys(df, demos[0]):
        owners: dict[str, set[str]] = defaultdict(set)
        hashes: dict[str, list[str]] = {}
        for d in demos:
            if not df.has(d, key):
                continue
            n = df.num_samples(d)
            idx = np.arange(n) if frames_per_demo is None else spaced_indices(n, frames_per_demo)
            frames = read_rows(df, d, key, idx)
            if frames.dtype != np.uint8:
                continue
            for o in outliers.frame_outliers(d, key, idx, frames, frozen_run, black_level):
                severity = "error" if o.kind == "black_frames" else "warning"
                out.append(Finding(o.kind, severity, o.message, (d,), key, o.start, o.stop))
            bright = frames.reshape(len(frames), -1).mean(axis=1, dtype=np.float64)
            saturated = bright > saturated_level
            if saturated.any():
                first = int(idx[np.argmax(saturated)])
                out.append(
                    Finding(
                        "saturated_frames",
                        "error",
                        f"{int(saturated.sum())} of {len(idx)} frames checked are saturated "
                        f"(mean brightness over {saturated_level:g}/255); first at step {first}",
                        (d,),
                        key,
                        first,
                        first + 1,
                    )
                )
            usable = (bright >= black_level) & ~saturated
            hashes[d] = [_digest(f) for f, ok in zip(frames, usable) if ok]
            for h in hashes[d]:
                owners[h].add(d)
        reported: set[tuple[str, str]] = set()
        for d, mine in hashes.items():
            if not mine:
                continue
            shared = defaultdict(int)
            for h in mine:
                for other in owners[h] - {d}:
                    shared[other] += 1
            for other, count in shared.items():
                pair = tuple(sorted((d, other), key=C.demo_sort_key))
                if count / len(mine) >= shared_share and pair not in reported:
                    reported.add(pair)
                    out.append(
                        Finding(
                            "duplicate_frames",
                            "warning",
                            f"{count} of {len(mine)} frames checked of {d} also appear in {other}",
                            pair,
                            key,
                        )
                    )
    return out
