"""PNG plots of a dataset: trajectories, episode lengths, action histograms.

`make_plots` writes them to a folder (the `demoset plot` command); `dataset_plots` returns
them as PNG bytes (the HTML report embeds them). Figures are drawn on matplotlib's Agg
canvas directly (no pyplot, no display, no global state), and matplotlib is imported only
when a plot is drawn.

Only actions and low-dim observations are read, whole, and only for the demos plotted
(trajectories) or for the selected demos (histograms); camera frames are never read here.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demoset.format import DemoFile, open_dataset
from demoset.viz import collect
from demoset.viz.collect import Progress
from demoset.viz.outliers import length_outliers
from demoset.viz.output import write_atomic
from demoset.viz.sampling import demos_within_rows, sample_demos

GROUP_COLOURS = ["#3b6fb6", "#e07b39", "#4a9d5b", "#8e6bb8", "#c44e52", "#7f7f7f"]
DEMO_COLOURS = [
    "#3b6fb6",
    "#e07b39",
    "#4a9d5b",
    "#c44e52",
    "#8e6bb8",
    "#8c613c",
    "#d684bd",
    "#6b6b6b",
    "#b5b52f",
    "#3bb5c4",
]
OVERLAY_STYLES = ["--", ":", "-.", (0, (5, 1, 1, 1)), (0, (3, 1))]
OUTLIER_COLOUR = "#d62728"
MAX_ACTION_ROWS = 2_000_000
FIG_WIDTH = 12.0
"""Inches at 100 dpi: every plot is 1200 pixels wide, so they line up in the report."""


@dataclass(frozen=True)
class Plot:
    """One rendered plot: `name` is a file stem ("lengths"), `png` the image bytes."""

    name: str
    title: str
    png: bytes
    caption: str = ""


# ---------------------------------------------------------------------- drawing helpers
def _style() -> dict:
    return {
        "font.size": 9,
        "axes.titlesize": 9,
        "axes.labelsize": 8,
        "xtick.labelsize": 7,
        "ytick.labelsize": 7,
        "legend.fontsize": 8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.color": "#e6e6e6",
        "grid.linewidth": 0.6,
        "axes.edgecolor": "#888888",
        "axes.titleweight": "bold",
        "figure.facecolor": "white",
    }


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib Figure drawn with the Agg canvas."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, pil_kwargs={"compress_level": 4})
    return buf.getvalue()


def _margins(
    fig,
    top: float = 0.75,
    bottom: float = 0.5,
    left: float = 0.6,
    right: float = 0.15,
    wspace: float = 0.3,
    hspace: float = 0.6,
) -> None:
    """Fixed margins in inches: much faster than tight_layout, and the same on every plot."""
    w, h = fig.get_figwidth(), fig.get_figheight()
    fig.subplots_adjust(
        left=left / w,
        right=1 - right / w,
        top=1 - top / h,
        bottom=bottom / h,
        wspace=wspace,
        hspace=hspace,
    )


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


def _group_colours(groups: Sequence[str]) -> dict[str, str]:
    names = list(dict.fromkeys(groups))
    return {g: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, g in enumerate(names)}


# ---------------------------------------------------------------------- figures
def trajectory_figure(
    key: str,
    series: Sequence[tuple[str, np.ndarray]],
    max_dims: int = 12,
    bounds: tuple[float, float] | None = None,
):
    """One panel per dimension of `key`, one line per demo in `series` ((label, (N, D)))."""
    import matplotlib
    from matplotlib.lines import Line2D

    dims = max((arr.shape[1] for _, arr in series), default=1)
    shown = min(dims, max_dims)
    rows, cols = _grid(shown)
    with matplotlib.rc_context(_style()):
        fig = _new_figure(FIG_WIDTH, (2.4 if cols < 3 else 1.9) * rows + 0.9)
        axes = fig.subplots(rows, cols, squeeze=False)
        for j in range(rows * cols):
            ax = axes[j // cols][j % cols]
            if j >= shown:
                ax.set_visible(False)
                continue
            for i, (_, arr) in enumerate(series):
                if j < arr.shape[1]:
                    ax.plot(arr[:, j], color=DEMO_COLOURS[i % len(DEMO_COLOURS)], lw=1.1, alpha=0.9)
            if bounds is not None:
                for b in bounds:
                    ax.axhline(b, color="#999999", lw=0.8, ls="--", zorder=0)
            ax.set_title(f"dim {j}", loc="left", fontweight="normal", color="#444444")
            if j // cols == rows - 1 or j + cols >= shown:
                ax.set_xlabel("step")
        handles = [
            Line2D([], [], color=DEMO_COLOURS[i % len(DEMO_COLOURS)], lw=2)
            for i in range(len(series))
        ]
        title = key if shown == dims else f"{key} (first {shown} of {dims} dims)"
        fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
        fig.legend(
            handles,
            [label for label, _ in series],
            loc="upper right",
            ncol=min(len(series), 6),
            frameon=False,
            bbox_to_anchor=(0.995, 1.0),
        )
        _margins(fig)
    return fig


def lengths_figure(
    demos: Sequence[str],
    lengths: Sequence[int] | np.ndarray,
    groups: Sequence[str],
    overlays: dict[str, Sequence[bool]] | None = None,
    outliers: Sequence[str] = (),
):
    """Episode lengths: a histogram (stacked by split) and the length of every demo.

    `groups` names each demo's split ("train", "valid" or "all"); `overlays` draws other
    filter keys as outlines over the histogram; `outliers` are ringed in red and named.
    """
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    lengths = np.asarray(lengths, dtype=np.int64)
    colours = _group_colours(groups)
    names = list(colours)
    overlays = overlays or {}
    with matplotlib.rc_context(_style()):
        fig = _new_figure(FIG_WIDTH, 3.9)
        ax_hist, ax_demo = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.35]})
        lo, hi = (int(lengths.min()), int(lengths.max())) if lengths.size else (0, 1)
        if hi - lo < 40:  # one bar per length, centred on it
            bins = np.arange(lo, hi + 2) - 0.5
        else:
            bins = np.histogram_bin_edges(lengths, bins=40)
        data = [lengths[[g == name for g in groups]] for name in names]
        ax_hist.hist(
            data,
            bins=bins,
            stacked=True,
            color=[colours[n] for n in names],
            label=[f"{n} ({len(d)})" for n, d in zip(names, data)],
            edgecolor="white",
            linewidth=0.4,
        )
        for i, (name, mask) in enumerate(overlays.items()):
            sel = lengths[np.asarray(mask, dtype=bool)]
            ax_hist.hist(
                sel,
                bins=bins,
                histtype="step",
                color="#222222",
                linestyle=OVERLAY_STYLES[i % len(OVERLAY_STYLES)],
                linewidth=1.2,
                label=f"{name} ({sel.size})",
            )
        ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_hist.set_xlabel("steps per demo")
        ax_hist.set_ylabel("demos")
        ax_hist.set_title("Length histogram", loc="left")
        ax_hist.legend(frameon=False)

        numbers = [re.fullmatch(r"demo_(\d+)", d) for d in demos]
        if all(numbers):  # robomimic names: put each demo at its number
            x = np.array([int(m.group(1)) for m in numbers])
            x_label = "demo number (demo_N)"
        else:
            x = np.arange(len(demos))
            x_label = "demo (numeric order)"
        for name in names:
            sel = np.array([g == name for g in groups], dtype=bool)
            ax_demo.scatter(x[sel], lengths[sel], s=14, color=colours[name], label=name, zorder=2)
        if lengths.size:
            ax_demo.axhline(np.median(lengths), color="#666666", lw=0.8, ls="--", zorder=1)
        flagged = [i for i, d in enumerate(demos) if d in set(outliers)]
        if flagged:
            ax_demo.scatter(
                x[flagged],
                lengths[flagged],
                s=80,
                facecolors="none",
                edgecolors=OUTLIER_COLOUR,
                linewidths=1.5,
                zorder=3,
                label="outlier",
            )
            for i in flagged[:12]:
                ax_demo.annotate(
                    demos[i],
                    (x[i], lengths[i]),
                    xytext=(5, 4),
                    textcoords="offset points",
                    fontsize=7,
                    color=OUTLIER_COLOUR,
                )
        ax_demo.set_xlabel(x_label)
        ax_demo.set_ylabel("steps")
        ax_demo.set_title("Length of each demo (dashed: median)", loc="left")
        if len(names) > 1 or flagged:
            ax_demo.legend(frameon=False, loc="best")
        fig.suptitle("Episode lengths", x=0.01, ha="left", fontsize=11, fontweight="bold")
        _margins(fig, top=0.7, wspace=0.18)
    return fig


def action_histogram_figure(
    actions: np.ndarray,
    groups: Sequence[str] | None = None,
    bounds: tuple[float, float] = (-1.0, 1.0),
    bins: int = 41,
    max_dims: int = 24,
):
    """Histogram of each action dimension over all steps, stacked by split.

    `groups` gives the split of each row of `actions` (None: one colour). Dashed lines
    mark the normalised bounds when the data lies near them.
    """
    import matplotlib
    from matplotlib.patches import Patch

    actions = np.asarray(actions, dtype=np.float64)
    actions = actions.reshape(len(actions), -1)
    dims = actions.shape[1]
    shown = min(dims, max_dims)
    rows, cols = _grid(shown)
    groups = list(groups) if groups is not None else ["all"] * len(actions)
    group_arr = np.asarray(groups)
    colours = _group_colours(groups)
    names = list(colours)
    finite = actions[np.isfinite(actions)]
    near_bounds = finite.size > 0 and np.abs(finite).max() <= 1.5 * max(
        abs(bounds[0]), abs(bounds[1])
    )
    with matplotlib.rc_context(_style()):
        fig = _new_figure(FIG_WIDTH, (2.4 if cols < 3 else 1.9) * rows + 0.9)
        axes = fig.subplots(rows, cols, squeeze=False)
        for j in range(rows * cols):
            ax = axes[j // cols][j % cols]
            if j >= shown:
                ax.set_visible(False)
                continue
            col = actions[:, j]
            ok = np.isfinite(col)
            if near_bounds:
                edges = np.linspace(
                    min(bounds[0], col[ok].min(initial=0)),
                    max(bounds[1], col[ok].max(initial=0)),
                    bins + 1,
                )
            else:
                edges = np.histogram_bin_edges(col[ok], bins=bins) if ok.any() else bins
            ax.hist(
                [col[ok & (group_arr == n)] for n in names],
                bins=edges,
                stacked=True,
                color=[colours[n] for n in names],
                histtype="stepfilled",
                linewidth=0,
            )
            if near_bounds:
                for b in bounds:
                    ax.axvline(b, color="#999999", lw=0.8, ls="--")
            ax.set_title(f"dim {j}", loc="left", fontweight="normal", color="#444444")
        title = "Action values per dimension (steps per bin)"
        if shown < dims:
            title += f", first {shown} of {dims} dims"
        fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
        if len(names) > 1:
            handles = [Patch(color=colours[n]) for n in names]
            fig.legend(
                handles,
                names,
                loc="upper right",
                ncol=len(names),
                frameon=False,
                bbox_to_anchor=(0.995, 1.0),
            )
        _margins(fig)
    return fig


# ---------------------------------------------------------------------- whole dataset
def _file_stem(key: str) -> str:
    return "trajectory_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", key.replace("/", "_"))


def dataset_plots(
    df: DemoFile,
    filter_key: str | None = None,
    demos: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    n_demos: int = 5,
    seed: int = 0,
    max_dims: int = 12,
    actions: dict[str, np.ndarray] | None = None,
    outliers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> list[Plot]:
    """Render the standard plots of an open dataset, as PNG bytes.

    `filter_key` limits every plot to that filter key's demos. Trajectories are drawn for
    `demos` (default: `n_demos` chosen with `seed`) and for `keys` (default: actions and
    every low-dim observation). `actions` may pass actions already read (demo -> array);
    `outliers` are demo names to ring on the lengths plot (default: the length outliers of
    `demoset.viz.outliers.length_outliers`).
    """
    selected = df.demos_for(filter_key)
    if not selected:
        return []
    if demos:
        for demo in demos:
            df.group(demo)  # raises DemoNotFoundError naming the file
        plot_demos = list(demos)
    else:
        plot_demos = sample_demos(selected, n_demos, seed)
    if keys:
        traj_keys = collect.resolve_keys(df, keys, plot_demos[0])
    else:
        traj_keys = (
            ["actions"] if df.has(plot_demos[0], "actions") else []
        ) + collect.low_dim_keys(df, plot_demos[0])

    steps_total = 2 + len(traj_keys) + (0 if actions is not None else len(selected))
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, steps_total)

    members = collect.filter_key_members(df, selected)
    partition = collect.find_partition(selected, members)
    groups = collect.demo_groups(selected, members, partition)
    overlays = {
        k: [d in set(v) for d in selected]
        for k, v in members.items()
        if k not in partition and k != filter_key and v
    }
    overlays = dict(list(overlays.items())[:5])
    lengths = df.lengths(selected)
    if outliers is None:
        outliers = [o.demo for o in length_outliers(selected, lengths)]

    plots = []
    fig = lengths_figure(selected, lengths, groups, overlays, outliers)
    caption = f"{len(selected)} demos" + (f" of filter key {filter_key}" if filter_key else "")
    if partition:
        caption += "; coloured by " + " / ".join(partition)
    plots.append(Plot("lengths", "Episode lengths", figure_png(fig), caption))
    tick()

    if actions is None:
        budget_demos = demos_within_rows(selected, lengths, MAX_ACTION_ROWS, seed)

        def read_progress(i: int, n: int) -> None:
            if progress:
                progress(done + i, steps_total)

        actions = collect.read_actions(df, budget_demos, read_progress)
        tick(len(selected))
    action_demos = [d for d in selected if d in actions]
    if action_demos:  # demos whose action width differs from the first are left out
        width = actions[action_demos[0]].shape[1]
        action_demos = [d for d in action_demos if actions[d].shape[1] == width]
    if action_demos:
        group_of = dict(zip(selected, groups))
        stacked = np.concatenate([actions[d] for d in action_demos])
        row_groups = np.concatenate([[group_of[d]] * len(actions[d]) for d in action_demos])
        fig = action_histogram_figure(stacked, row_groups, max_dims=max(max_dims, 24))
        caption = f"{len(stacked):,} steps of {len(action_demos)} demos"
        plots.append(Plot("action_histograms", "Action values", figure_png(fig), caption))
    tick()

    group_of = dict(zip(selected, groups))
    for key in traj_keys:
        series = []
        for demo in plot_demos:
            if df.has(demo, key):
                arr = (
                    actions[demo]
                    if key == "actions" and demo in actions
                    else collect.read_flat(df, demo, key)
                )
                label = (
                    demo
                    if group_of.get(demo, "all") in ("all", "other")
                    else f"{demo} ({group_of[demo]})"
                )
                series.append((label, arr))
        if series:
            bounds = (-1.0, 1.0) if key == "actions" else None
            fig = trajectory_figure(key, series, max_dims=max_dims, bounds=bounds)
            plots.append(
                Plot(
                    _file_stem(key),
                    key,
                    figure_png(fig),
                    f"{len(series)} demos: " + ", ".join(plot_demos),
                )
            )
        tick()
    return plots


def make_plots(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    demos: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    filter_key: str | None = None,
    n_demos: int = 5,
    seed: int = 0,
    max_dims: int = 12,
    progress: Progress | None = None,
) -> list[str]:
    """Write the standard plots of a dataset as PNG files into `out_dir`; returns their paths.

    Files: lengths.png, action_histograms.png, trajectory_actions.png and one
    trajectory_obs_<key>.png per low-dim observation key (or per key in `keys`). The
    folder is created when missing; each file is written atomically.
    """
    from demoset.errors import WriteError

    out_dir = os.fspath(out_dir)
    with open_dataset(path) as df:
        plots = dataset_plots(
            df,
            filter_key=filter_key,
            demos=demos,
            keys=keys,
            n_demos=n_demos,
            seed=seed,
            max_dims=max_dims,
            progress=progress,
        )
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise WriteError(
            f"cannot create the output folder ({exc.strerror or exc})", out_dir
        ) from None
    return [write_atomic(os.path.join(out_dir, f"{p.name}.png"), p.png) for p in plots]
