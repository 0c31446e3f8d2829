"""build_report(path, out): one self-contained HTML page that shows a dataset.

The page holds the summary `demoset info` prints, the `validate` findings, the filter keys,
the plots of `demoset plot`, a looping clip and a strip of frames per camera for a seeded
sample of demos, and the demos that look odd (lengths, actions pinned at their bounds,
frozen or black frames). Images are embedded as data URIs, so the file opens anywhere,
offline, and can be mailed or attached to an issue.

It is built to stay quick on very large image datasets: actions and low-dim observations
are read (they are small), but camera frames only for a sample of demos and, within each, a
sample of frames (`scan_demos` x `scan_frames` per camera). The result says how many frames
were read of how many there are.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from demoset.errors import WriteError
from demoset.format import Finding, demo_sort_key, open_dataset, validate
from demoset.viz import collect, frames, outliers
from demoset.viz.html_page import CameraDemo, CameraSection, OutlierRow, ReportPage, render_page
from demoset.viz.output import write_atomic
from demoset.viz.plots import MAX_ACTION_ROWS, dataset_plots
from demoset.viz.sampling import demos_within_rows, read_rows, sample_demos, spaced_indices

Progress = Callable[[int, int], None]


@dataclass
class ReportResult:
    """What `build_report` wrote and found."""

    path: str
    size_bytes: int
    num_demos: int
    outliers: list[outliers.Outlier]
    findings: list[Finding] | None
    frames_read: int
    frames_total: int
    seconds: float
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "num_demos": self.num_demos,
            "outliers": [o.to_dict() for o in self.outliers],
            "findings": None if self.findings is None else [f.to_dict() for f in self.findings],
            "frames_read": self.frames_read,
            "frames_total": self.frames_total,
            "seconds": round(self.seconds, 2),
            "plots": self.plots,
        }


class _Stages:
    """Maps the progress of successive stages onto one (done, total) scale."""

    def __init__(self, progress: Progress | None, weights: dict[str, int]):
        self.progress = progress
        self.weights = weights
        self.total = sum(weights.values())
        self.offset = 0

    def sub(self, stage: str) -> Progress:
        weight, offset = self.weights[stage], self.offset

        def report(done: int, total: int) -> None:
            if self.progress and total:
                self.progress(offset + round(weight * min(done, total) / total), self.total)

        return report

    def finish(self, stage: str) -> None:
        self.offset += self.weights[stage]
        if self.progress:
            self.progress(self.offset, self.total)


def _action_stats(actions: dict[str, np.ndarray]) -> list[dict[str, float]] | None:
    if not actions:
        return None
    dims = {a.shape[1] for a in actions.values()}
    if len(dims) != 1:
        return None
    stacked = np.concatenate(list(actions.values()))
    if stacked.size == 0:
        return None
    bound = outliers.at_bound(stacked).mean(axis=0)
    return [
        {
            "min": float(np.nanmin(stacked[:, j])),
            "max": float(np.nanmax(stacked[:, j])),
            "mean": float(np.nanmean(stacked[:, j])),
            "std": float(np.nanstd(stacked[:, j])),
            "at_bound": float(bound[j]),
        }
        for j in range(stacked.shape[1])
    ]


def _describe_camera(info) -> str:
    h, w, c = info.shape
    kind = (
        "depth"
        if info.dtype.kind == "f"
        else {1: "gray", 3: "RGB", 4: "RGBA"}.get(c, f"{c} channels")
    )
    return f"{w}×{h} {kind}, {info.dtype}"


def _thumb(
    indices: np.ndarray, rgb: np.ndarray, start: int, stop: int, count: int = 5
) -> tuple[str, list[int]] | None:
    """A small strip of the read frames in steps [start, stop) and one either side.

    Returns (data URI, the steps shown), or None when no read frame falls in the range.
    """
    inside = np.flatnonzero((indices >= start) & (indices < stop))
    if inside.size == 0:
        return None
    lo, hi = max(0, inside[0] - 1), min(len(indices) - 1, inside[-1] + 1)
    picks = np.unique(np.round(np.linspace(lo, hi, min(count, hi - lo + 1))).astype(int))
    small = frames.fit(rgb[picks], 64)
    uri = frames.data_uri(frames.encode_png(frames.strip(small, gap=2)), "image/png")
    return uri, [int(i) for i in indices[picks]]


def _check_output(out: str) -> None:
    """Fail before the work, not after it, when the report cannot be written."""
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise WriteError("cannot write: the folder does not exist", out)
    if not os.access(folder, os.W_OK):
        raise WriteError("cannot write: the folder is not writable", out)
    if os.path.isdir(out):
        raise WriteError("cannot write: a folder has this name", out)


def build_report(
    path: str | os.PathLike,
    out: str | os.PathLike,
    filter_key: str | None = None,
    n_camera_demos: int = 4,
    n_plot_demos: int = 5,
    plot_keys: Sequence[str] | None = None,
    scan_demos: int = 24,
    scan_frames: int = 120,
    strip_frames: int = 8,
    clip_frames: int = 48,
    clips: bool = True,
    run_validate: bool = True,
    seed: int = 0,
    length_threshold: float = 3.5,
    bound_run: int = 20,
    frozen_run: int = 20,
    black_level: float = 4.0,
    doctor: dict | None = None,
    progress: Progress | None = None,
) -> ReportResult:
    """Write a self-contained HTML report of the dataset at `path` to `out`.

    `filter_key` limits the report to that key's demos. Camera frames are read for
    `scan_demos` demos chosen with `seed` (`scan_frames` spread over each demo, per camera);
    clips and strips show `n_camera_demos` of them. Trajectory plots draw `n_plot_demos`
    demos and `plot_keys` (default: actions and every low-dim observation).

    Outlier thresholds: `length_threshold` (robust z-score), `bound_run` (steps with an
    action dimension pinned at ±1), `frozen_run` (steps of identical frames), `black_level`
    (mean brightness out of 255). `doctor` is a `demoset doctor` report (as a dict) to show
    in its own section. The file is written atomically. Raises DemosetError
    subclasses for unreadable input or output (checked before any work).
    """
    from demoset import __version__
    from demoset.summary import summarize

    started = time.perf_counter()
    path = os.fspath(path)
    out = os.fspath(out)
    _check_output(out)
    with open_dataset(path) as df:
        selected = df.demos_for(filter_key)
        all_demos = len(df.demos)
        lengths = df.lengths(selected) if selected else np.zeros(0, dtype=np.int64)
        cams = collect.camera_keys(df) if selected else []
        scan = sample_demos(selected, scan_demos, seed)
        n_plot_keys = 3 + (len(plot_keys or collect.low_dim_keys(df)) if selected else 0)
        stages = _Stages(
            progress,
            {
                "validate": len(df.demos) if run_validate else 0,
                "summary": 1,
                "actions": len(selected),
                "frames": len(scan) * len(cams),
                "plots": n_plot_keys,
                "write": 1,
            },
        )

        findings = None
        if run_validate:
            findings = validate(path, progress=stages.sub("validate"))
        stages.finish("validate")
        summary = summarize(path, filter_key=filter_key)
        stages.finish("summary")

        # ------------------------------------------------ actions and lengths
        action_demos = demos_within_rows(selected, lengths, MAX_ACTION_ROWS, seed)
        actions = collect.read_actions(df, action_demos, stages.sub("actions"))
        stages.finish("actions")
        found: list[outliers.Outlier] = outliers.length_outliers(
            selected, lengths, length_threshold
        )
        action_stats = _action_stats(actions)
        switch_dims = (
            outliers.switch_like_dims([s["at_bound"] for s in action_stats]) if action_stats else []
        )
        for demo, arr in actions.items():
            found.extend(outliers.action_bound_outliers(demo, arr, bound_run, switch_dims))

        # ------------------------------------------------ camera frames
        members = collect.filter_key_members(df, selected)
        partition = collect.find_partition(selected, members)
        groups = dict(zip(selected, collect.demo_groups(selected, members, partition)))
        shown = set(sample_demos(scan, n_camera_demos, seed + 1))
        cam_info = df.obs_keys(selected[0]) if selected else {}
        sections = {key: CameraSection(key, _describe_camera(cam_info[key[4:]])) for key in cams}
        thumbs: dict[tuple[str, str], tuple[str, list[int]] | None] = {}
        frames_read = 0
        sub = stages.sub("frames")
        job = 0
        for demo in scan:
            n = df.num_samples(demo)
            for key in cams:
                job += 1
                if not df.has(demo, key):
                    sub(job, len(scan) * len(cams))
                    continue
                idx = spaced_indices(n, scan_frames)
                raw = read_rows(df, demo, key, idx)
                frames_read += len(idx)
                is_rgb = raw.dtype == np.uint8
                flagged = (
                    outliers.frame_outliers(demo, key, idx, raw, frozen_run, black_level)
                    if is_rgb
                    else []
                )
                rgb = frames.to_rgb(raw) if (flagged or demo in shown) else None
                for o in flagged:
                    thumbs[(o.demo, o.kind + o.key)] = _thumb(idx, rgb, o.start, o.stop)
                found.extend(flagged)
                if demo in shown and len(idx):
                    pick = spaced_indices(len(idx), strip_frames)
                    strip = frames.grid(frames.fit(rgb[pick], 72), cols=4)
                    row = CameraDemo(
                        demo,
                        n,
                        groups.get(demo),
                        frames.data_uri(frames.encode_png(strip), "image/png"),
                        [int(i) for i in idx[pick]],
                    )
                    if clips:
                        cpick = spaced_indices(len(idx), clip_frames)
                        data, mime = frames.encode_clip(frames.fit(rgb[cpick], 146))
                        row.clip_uri = frames.data_uri(data, mime)
                    sections[key].demos.append(row)
                sub(job, len(scan) * len(cams))
        stages.finish("frames")

        # ------------------------------------------------ plots
        length_flagged = [o.demo for o in found if o.kind in ("long", "short")]
        plots = dataset_plots(
            df,
            filter_key=filter_key,
            n_demos=n_plot_demos,
            keys=plot_keys,
            seed=seed,
            actions=actions,
            outliers=length_flagged,
            progress=stages.sub("plots"),
        )
        stages.finish("plots")

        filter_rows = []
        for key in df.filter_keys:
            try:
                named = df.filter_key_demos(key)
            except Exception:  # noqa: BLE001 - a broken key is reported by validate
                filter_rows.append((key, None, []))
                continue
            filter_rows.append((key, len(named), named[:6]))
        frames_total = int(lengths.sum()) * len(cams)

    checks = [
        f"lengths of all {len(selected)} demos (robust z-score beyond {length_threshold:g} and 20% from the median)"
    ]
    if actions:
        note = (
            f"; {'dims' if len(switch_dims) > 1 else 'dim'} {', '.join(map(str, switch_dims))} "
            "skipped (at ±1 most of the time, like a gripper)"
            if switch_dims
            else ""
        )
        checks.append(
            f"actions of {len(actions)} demos for a dimension pinned at ±1 for {bound_run}+ steps{note}"
        )
    if cams:
        checks.append(
            f"frames of {len(scan)} of {len(selected)} demos × {len(cams)} camera{'s' if len(cams) > 1 else ''}, up to {scan_frames} frames "
            f"spread over each ({frames_read:,} of {frames_total:,} frames read): black frames "
            f"(mean brightness under {black_level:g}/255) and identical frames for {frozen_run}+ steps"
        )
    order = {"long": 0, "short": 0, "actions_at_bound": 1, "black_frames": 2, "frozen_frames": 3}
    found.sort(key=lambda o: (order.get(o.kind, 9), demo_sort_key(o.demo)))
    page = ReportPage(
        title=os.path.basename(path),
        summary=summary,
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        version=__version__,
        filter_key=filter_key,
        plots=plots,
        cameras=list(sections.values()),
        outliers=[
            OutlierRow(o, *(thumbs.get((o.demo, o.kind + (o.key or ""))) or ())) for o in found
        ],
        findings=findings,
        filter_key_rows=filter_rows,
        groups=groups,
        checks=checks,
        all_demos=all_demos,
        action_stats=action_stats,
        doctor=doctor,
    )
    html = render_page(page)
    write_atomic(out, html)
    stages.finish("write")
    return ReportResult(
        path=out,
        size_bytes=len(html.encode("utf-8")),
        num_demos=len(selected),
        outliers=found,
        findings=findings,
        frames_read=frames_read,
        frames_total=frames_total,
        seconds=time.perf_counter() - started,
        plots=[p.name for p in plots],
    )
