"""The HTML of the dataset report: one self-contained page, inline CSS, no scripts.

`render_page(page)` turns a `ReportPage` (everything already computed, images already
encoded as data URIs) into HTML text. Every string that came from the dataset file (demo
names, keys, attributes, messages) is escaped: the file is untrusted data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from typing import Any

from demoset.format import Finding
from demoset.viz.frames import data_uri
from demoset.viz.outliers import Outlier
from demoset.viz.plots import Plot

KIND_LABELS = {
    "long": "long demo",
    "short": "short demo",
    "actions_at_bound": "actions at bound",
    "frozen_frames": "frozen frames",
    "black_frames": "black frames",
}


@dataclass
class CameraDemo:
    """One sampled demo of one camera: a looping clip and a strip of frames."""

    demo: str
    length: int
    group: str | None
    strip_uri: str
    strip_steps: list[int]
    clip_uri: str | None = None


@dataclass
class CameraSection:
    key: str
    describe: str
    demos: list[CameraDemo] = field(default_factory=list)


@dataclass
class OutlierRow:
    outlier: Outlier
    thumb_uri: str | None = None
    thumb_steps: list[int] = field(default_factory=list)


@dataclass
class ReportPage:
    """Everything the page shows, computed by `demoset.viz.report`."""

    title: str
    summary: dict[str, Any]
    generated: str
    version: str
    filter_key: str | None
    plots: list[Plot]
    cameras: list[CameraSection]
    outliers: list[OutlierRow]
    findings: list[Finding] | None
    filter_key_rows: list[tuple[str, int | None, list[str]]]
    groups: dict[str, str]
    checks: list[str]
    all_demos: int = 0
    action_stats: list[dict[str, float]] | None = None
    doctor: dict[str, Any] | None = None
    """`demoset doctor`'s report as a dict (DoctorReport.to_dict()), when it was run."""


CSS = """
:root { --ink:#1d2330; --muted:#5d6677; --line:#e3e6ec; --bg:#f5f6f9; --card:#fff;
  --blue:#3b6fb6; --orange:#e07b39; --red:#c8372d; --amber:#b7791f; --green:#2f855a; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background:#1f2a3d; color:#fff; padding:22px 0 18px; }
.wrap { max-width:1240px; margin:0 auto; padding:0 24px; }
header .kicker { text-transform:uppercase; letter-spacing:.08em; font-size:11px; color:#9fb3d1; }
header h1 { margin:2px 0 4px; font-size:26px; font-weight:650; word-break:break-all; }
header .sub { color:#c9d3e3; font-size:13px; }
header .sub code { color:#fff; background:rgba(255,255,255,.08); padding:1px 5px; border-radius:4px; }
nav { position:sticky; top:0; z-index:5; background:rgba(255,255,255,.96); border-bottom:1px solid var(--line); }
nav .wrap { display:flex; gap:18px; flex-wrap:wrap; padding-top:9px; padding-bottom:9px; font-size:13px; }
nav a { color:var(--muted); text-decoration:none; }
nav a:hover { color:var(--blue); }
main { padding:18px 0 40px; }
.cards { display:grid; grid-template-columns:repeat(4, 1fr); gap:12px; margin-bottom:8px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.card .label { font-size:11px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); }
.card .value { font-size:22px; font-weight:650; margin-top:2px; }
.card .note { font-size:12px; color:var(--muted); }
.card.bad .value { color:var(--red); } .card.warn .value { color:var(--amber); } .card.good .value { color:var(--green); }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:16px 20px 18px; margin-top:18px; }
section h2 { margin:0 0 10px; font-size:18px; }
section h3 { margin:18px 0 8px; font-size:15px; }
section h3 .dim { font-weight:400; color:var(--muted); font-size:13px; }
p.lead { color:var(--muted); margin:0 0 12px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:11px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); font-weight:600; background:#fafbfc; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr:last-child td { border-bottom:none; }
code, .mono { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px; }
.badge { display:inline-block; padding:1px 8px; border-radius:999px; font-size:11.5px; font-weight:600; white-space:nowrap; }
.b-error { background:#fde8e6; color:var(--red); } .b-warning { background:#fdf3e1; color:var(--amber); }
.b-ok { background:#e3f4ea; color:var(--green); } .b-info { background:#e8eef8; color:var(--blue); }
.b-group { background:#eef1f6; color:#3a4456; font-weight:500; }
.ok-box { background:#eef8f1; border:1px solid #cbe8d5; color:#24603f; border-radius:8px; padding:10px 14px; }
.bar { background:#edf0f5; border-radius:4px; height:10px; width:180px; overflow:hidden; display:inline-block; vertical-align:middle; }
.bar span { display:block; height:100%; background:var(--blue); }
.plot { margin:8px 0 22px; }
details.fold { border-top:1px solid var(--line); padding:2px 0; }
details.fold summary { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:13px; padding:6px 0; }
.plot img { display:block; width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
.plot .caption { font-size:12.5px; color:var(--muted); margin-top:4px; }
.cam-grid { display:grid; grid-template-columns:repeat(2, minmax(0, 1fr)); gap:10px 18px; margin-bottom:6px; }
.cam-card { border:1px solid var(--line); border-radius:8px; padding:8px 10px 8px; background:#fcfcfd; }
.cam-card .head { margin-bottom:6px; }
.cam-card .name { font-weight:600; }
.cam-card .body { display:flex; gap:12px; align-items:flex-start; }
.cam-card .clip img { display:block; border-radius:6px; background:#000; }
.cam-card .strip { min-width:0; overflow-x:auto; }
.cam-card .strip img { display:block; border-radius:4px; }
.steps { font-size:12px; color:var(--muted); margin-top:3px; }
.thumb img { border-radius:3px; display:block; }
pre { background:#f7f8fa; border:1px solid var(--line); border-radius:6px; padding:10px 12px; overflow:auto; font-size:12px; max-height:420px; }
details summary { cursor:pointer; color:var(--blue); margin:6px 0; }
ul.checks { margin:6px 0 0; padding-left:20px; color:var(--muted); font-size:13px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px 0 30px; }
.two { display:grid; grid-template-columns:1fr 1fr; gap:24px; }
@media (max-width: 900px) { .cards { grid-template-columns:repeat(2, 1fr); } .two, .cam-grid { grid-template-columns:1fr; } }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _fmt_num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return "–"
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _card(label: str, value: str, note: str = "", tone: str = "", href: str | None = None) -> str:
    inner = f'<div class="label">{_e(label)}</div><div class="value">{value}</div>'
    if note:
        inner += f'<div class="note">{note}</div>'
    if href:
        inner = f'<a href="{href}" style="color:inherit;text-decoration:none">{inner}</a>'
    return f'<div class="card {tone}">{inner}</div>'


def _group_badge(group: str | None) -> str:
    if not group or group in ("all", "other"):
        return ""
    return f' <span class="badge b-group">{_e(group)}</span>'


def _overview(page: ReportPage) -> str:
    s = page.summary
    length = s.get("length") or {}
    findings = page.findings
    cards = [
        _card(
            "Demos",
            _fmt_num(s.get("num_demos")),
            f"filter key {_e(page.filter_key)}" if page.filter_key else "",
        ),
        _card(
            "Transitions",
            _fmt_num(s.get("num_transitions")),
            _size(s.get("file_size")) + " on disk",
        ),
        _card(
            "Length",
            f"{length.get('mean', 0):.1f}",
            f"± {length.get('std', 0):.1f} · min {length.get('min', 0)} · max {length.get('max', 0)}",
        ),
        _card(
            "Action dim",
            _fmt_num(s.get("action_dim")),
            "all in [-1, 1]" if s.get("actions_in_range") else "<b>outside [-1, 1]</b>",
        ),
        _card(
            "Cameras",
            str(len(page.cameras)),
            ", ".join(_e(c.key.split("/")[-1]) for c in page.cameras) or "none",
        ),
        _card(
            "Filter keys",
            str(len(page.filter_key_rows)),
            ", ".join(_e(r[0]) for r in page.filter_key_rows[:4]) or "none",
        ),
    ]
    if findings is None:
        cards.append(_card("Validation", "skipped", "run without validate"))
    else:
        errors = sum(f.level == "error" for f in findings)
        warnings = sum(f.level == "warning" for f in findings)
        tone = "bad" if errors else "warn" if warnings else "good"
        value = "clean" if not findings else f"{errors} err · {warnings} warn"
        cards.append(
            _card("Validation", value, "findings of demoset validate", tone, "#validation")
        )
    n_out = len(page.outliers)
    demos_out = len({r.outlier.demo for r in page.outliers})
    cards.append(
        _card(
            "Outliers",
            str(n_out),
            f"in {demos_out} demos" if n_out else "nothing unusual found",
            "warn" if n_out else "good",
            "#outliers",
        )
    )
    return f'<div class="cards">{"".join(cards)}</div>'


def _outliers(page: ReportPage) -> str:
    out = ['<section id="outliers"><h2>Outliers</h2>']
    out.append('<p class="lead">Demos that differ from the rest. Checked:</p><ul class="checks">')
    out.extend(f"<li>{c}</li>" for c in page.checks)
    out.append("</ul>")
    if not page.outliers:
        out.append('<p class="ok-box" style="margin-top:12px">No outliers found.</p></section>')
        return "".join(out)
    out.append(
        '<table style="margin-top:12px"><thead><tr><th>Demo</th><th>What</th><th>Array</th>'
        "<th>Detail</th><th>Frames</th></tr></thead><tbody>"
    )
    for row in page.outliers:
        o = row.outlier
        thumb = (
            f'<div class="thumb"><img alt="frames of {_e(o.demo)}" src="{row.thumb_uri}">'
            f'<div class="steps">steps {", ".join(map(str, row.thumb_steps))}</div></div>'
            if row.thumb_uri
            else ""
        )
        out.append(
            f'<tr><td class="mono">{_e(o.demo)}{_group_badge(page.groups.get(o.demo))}</td>'
            f'<td><span class="badge b-warning">{_e(KIND_LABELS.get(o.kind, o.kind))}</span></td>'
            f'<td class="mono">{_e(o.key or "")}</td><td>{_e(o.message)}</td><td>{thumb}</td></tr>'
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def _validation(page: ReportPage) -> str:
    out = ['<section id="validation"><h2>Validation</h2>']
    if page.findings is None:
        out.append(
            '<p class="lead">Skipped (the report was made with validation turned off).</p></section>'
        )
        return "".join(out)
    if not page.findings:
        out.append('<p class="ok-box">demoset validate found no problems.</p></section>')
        return "".join(out)
    out.append(
        '<p class="lead">Findings of <code>demoset validate</code>: errors break robomimic or the loader; warnings are legal but suspicious.</p>'
    )
    out.append(
        "<table><thead><tr><th>Level</th><th>HDF5 path</th><th>Message</th><th>Code</th></tr></thead><tbody>"
    )
    for f in sorted(page.findings, key=lambda f: (f.level != "error", f.h5path)):
        out.append(
            f'<tr><td><span class="badge b-{_e(f.level)}">{_e(f.level)}</span></td>'
            f'<td class="mono">{_e(f.h5path)}</td><td>{_e(f.message)}</td><td class="mono">{_e(f.code)}</td></tr>'
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def _doctor(page: ReportPage) -> str:
    out = ['<section id="doctor"><h2>Doctor</h2>']
    report = page.doctor or {}
    findings = [f for f in report.get("findings", []) if f["severity"] != "info"]
    figures = [f for f in report.get("findings", []) if f["severity"] == "info"]
    checked = "; ".join(report.get("checked", []))
    out.append(
        '<p class="lead">Content checks of <code>demoset doctor</code>: errors would make '
        f"training go wrong without any error message. Checked: {_e(checked)}.</p>"
    )
    if not findings:
        out.append('<p class="ok-box">demoset doctor found no problems.</p>')
    else:
        out.append(
            "<table><thead><tr><th>Severity</th><th>Check</th><th>Demos and steps</th>"
            "<th>Key</th><th>Finding</th></tr></thead><tbody>"
        )
        for f in findings:
            where = ", ".join(f["demos"][:6]) + (" …" if len(f["demos"]) > 6 else "")
            if f.get("start") is not None and f.get("stop") is not None:
                where += f" (steps {f['start']}-{f['stop'] - 1})"
            out.append(
                f'<tr><td><span class="badge b-{_e(f["severity"])}">{_e(f["severity"])}</span></td>'
                f'<td class="mono">{_e(f["check"])}</td><td class="mono">{_e(where or "dataset")}</td>'
                f'<td class="mono">{_e(f.get("key") or "")}</td><td>{_e(f["message"])}</td></tr>'
            )
        out.append("</tbody></table>")
    for f in figures:
        out.append(f'<p><span class="badge b-info">info</span> {_e(f["message"])}</p>')
    out.append("</section>")
    return "".join(out)


def _cameras(page: ReportPage) -> str:
    out = ['<section id="cameras"><h2>Cameras</h2>']
    if not page.cameras:
        out.append('<p class="lead">This dataset has no camera observations.</p></section>')
        return "".join(out)
    n = len(page.cameras[0].demos)
    out.append(
        f'<p class="lead">A seeded sample of {n} demos: a looping clip of each and frames spread evenly over it.</p>'
    )
    for cam in page.cameras:
        out.append(f'<h3>{_e(cam.key)} <span class="dim">{_e(cam.describe)}</span></h3>')
        out.append('<div class="cam-grid">')
        for d in cam.demos:
            clip = (
                f'<div class="clip"><img alt="clip of {_e(d.demo)}, {_e(cam.key)}" src="{d.clip_uri}"></div>'
                if d.clip_uri
                else ""
            )
            steps = ", ".join(str(s) for s in d.strip_steps)
            out.append(
                f'<div class="cam-card"><div class="head"><span class="name mono">{_e(d.demo)}</span>'
                f'{_group_badge(d.group)} <span class="steps">{d.length} steps</span></div>'
                f'<div class="body">{clip}<div class="strip"><img alt="frames of {_e(d.demo)}, '
                f'{_e(cam.key)}" src="{d.strip_uri}"><div class="steps">steps {_e(steps)}</div>'
                "</div></div></div>"
            )
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def _plot_html(plot: Plot, caption: bool = True) -> str:
    uri = data_uri(plot.png, "image/png")
    text = f'<div class="caption">{_e(plot.caption)}</div>' if caption and plot.caption else ""
    return f'<div class="plot"><img alt="{_e(plot.title)}" src="{uri}">{text}</div>'


def _plots(page: ReportPage) -> str:
    out = ['<section id="plots"><h2>Plots</h2>']
    if not page.plots:
        out.append('<p class="lead">Nothing to plot: no demos.</p></section>')
        return "".join(out)
    overview = [p for p in page.plots if not p.name.startswith("trajectory_")]
    trajectories = [p for p in page.plots if p.name.startswith("trajectory_")]
    out.extend(_plot_html(p) for p in overview)
    if trajectories:
        out.append(
            f'<h3 id="trajectories">Trajectories</h3><p class="lead">{_e(trajectories[0].caption)}; '
            "one panel per dimension.</p>"
        )
        # actions are always shown; observation keys fold away when there are many
        fold = len(trajectories) > 4
        for i, p in enumerate(trajectories):
            if fold and p.title != "actions":
                state = " open" if i < 3 else ""
                out.append(
                    f'<details class="fold"{state}><summary>{_e(p.title)}</summary>'
                    f"{_plot_html(p, caption=False)}</details>"
                )
            else:
                out.append(_plot_html(p, caption=False))
    out.append("</section>")
    return "".join(out)


def _filter_keys(page: ReportPage) -> str:
    out = ['<section id="filter-keys"><h2>Filter keys</h2>']
    if not page.filter_key_rows:
        out.append(
            '<p class="lead">No filter keys (no <code>mask/</code> group). <code>demoset split</code> makes train / valid keys.</p></section>'
        )
        return "".join(out)
    total = max(1, page.all_demos)
    out.append(
        '<table><thead><tr><th>Filter key</th><th class="num">Demos</th><th>Share of all demos</th><th>Demos named</th></tr></thead><tbody>'
    )
    for name, count, first in page.filter_key_rows:
        share = (count or 0) / max(1, total)
        more = ", …" if count is not None and count > len(first) else ""
        out.append(
            f'<tr><td class="mono">{_e(name)}</td><td class="num">{_fmt_num(count)}</td>'
            f'<td><span class="bar"><span style="width:{min(100.0, share * 100):.1f}%"></span></span> {share * 100:.0f}%</td>'
            f'<td class="mono">{_e(", ".join(first))}{more}</td></tr>'
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def _structure(page: ReportPage) -> str:
    s = page.summary
    structure = s.get("structure") or {}
    arrays = structure.get("arrays") or {}
    out = ['<section id="structure"><h2>Structure</h2><div class="two"><div>']
    out.append(f"<h3>Arrays of {_e(s.get('first_demo') or 'the first demo')}</h3>")
    if arrays:
        out.append(
            "<table><thead><tr><th>Array</th><th>Shape</th><th>dtype</th></tr></thead><tbody>"
        )
        next_obs = [k for k in arrays if k.startswith("next_obs/")]
        obs = {k[4:] for k in arrays if k.startswith("obs/")}
        mirrored = bool(next_obs) and {k[9:] for k in next_obs} == obs
        for key, info in arrays.items():
            if mirrored and key.startswith("next_obs/"):
                if key == next_obs[0]:
                    out.append(
                        f'<tr><td class="mono">next_obs/…</td><td colspan="2">{len(next_obs)} '
                        "arrays, the same keys as obs/</td></tr>"
                    )
                continue
            shape = "(" + ", ".join(str(v) for v in info.get("shape", [])) + ")"
            out.append(
                f'<tr><td class="mono">{_e(key)}</td><td class="mono">{_e(shape)}</td><td class="mono">{_e(info.get("dtype"))}</td></tr>'
            )
        out.append("</tbody></table>")
    else:
        out.append('<p class="lead">No demos.</p>')
    out.append("</div><div>")
    if page.action_stats:
        out.append(
            '<h3>Actions per dimension</h3><table><thead><tr><th class="num">Dim</th><th class="num">Min</th>'
            '<th class="num">Max</th><th class="num">Mean</th><th class="num">Std</th><th class="num">At ±1</th></tr></thead><tbody>'
        )
        for j, st in enumerate(page.action_stats):
            out.append(
                f'<tr><td class="num">{j}</td><td class="num">{st["min"]:.3f}</td><td class="num">{st["max"]:.3f}</td>'
                f'<td class="num">{st["mean"]:.3f}</td><td class="num">{st["std"]:.3f}</td><td class="num">{st["at_bound"] * 100:.1f}%</td></tr>'
            )
        out.append("</tbody></table>")
    attrs = structure.get("attrs") or {}
    if attrs:
        out.append("<h3>Demo attributes</h3><table><tbody>")
        for key, value in attrs.items():
            out.append(f'<tr><td class="mono">{_e(key)}</td><td class="mono">{_e(value)}</td></tr>')
        out.append("</tbody></table>")
    out.append("</div></div></section>")
    return "".join(out)


def _environment(page: ReportPage) -> str:
    s = page.summary
    meta = s.get("env_meta")
    out = ['<section id="environment"><h2>Environment</h2>']
    if s.get("env_meta_error"):
        out.append(f'<p><span class="badge b-error">error</span> {_e(s["env_meta_error"])}</p>')
    if not meta:
        out.append('<p class="lead">No <code>env_args</code> attribute.</p></section>')
        return "".join(out)
    type_names = {1: "robosuite", 2: "gym", 3: "ig_momart"}
    env_type = meta.get("type", meta.get("env_type"))
    out.append(
        f'<table style="width:auto"><tbody><tr><th>env_name</th><td class="mono">{_e(meta.get("env_name"))}</td></tr>'
        f'<tr><th>type</th><td class="mono">{_e(env_type)} ({_e(type_names.get(env_type, "unknown"))})</td></tr></tbody></table>'
    )
    text = json.dumps(meta.get("env_kwargs", {}), indent=2, sort_keys=True, default=str)
    out.append(f"<details><summary>env_kwargs</summary><pre>{_e(text)}</pre></details></section>")
    return "".join(out)


def render_page(page: ReportPage) -> str:
    """The complete HTML document of a report."""
    s = page.summary
    meta = s.get("env_meta") or {}
    env = f"{_e(meta.get('env_name'))} · " if meta.get("env_name") else ""
    sub = f"{env}<code>{_e(s.get('path', ''))}</code>" + (
        f" · filter key <code>{_e(page.filter_key)}</code>" if page.filter_key else ""
    )
    # problems come first when there are any; a clean dataset opens on its pictures
    doctor_problems = page.doctor is not None and not page.doctor.get("ok", True)
    problems_first = bool(page.outliers) or bool(page.findings) or doctor_problems
    checks = [("outliers", "Outliers", _outliers), ("validation", "Validation", _validation)]
    if page.doctor is not None:
        checks.insert(0, ("doctor", "Doctor", _doctor))
    pictures = [("cameras", "Cameras", _cameras), ("plots", "Plots", _plots)]
    rest = [
        ("filter-keys", "Filter keys", _filter_keys),
        ("structure", "Structure", _structure),
        ("environment", "Environment", _environment),
    ]
    order = (checks + pictures if problems_first else pictures + checks) + rest
    nav = "".join(f'<a href="#{anchor}">{title}</a>' for anchor, title, _ in order)
    body = [_overview(page)] + [render(page) for _, _, render in order]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(page.title)} · demoset report</title><style>{CSS}</style></head><body>"
        f'<header><div class="wrap"><div class="kicker">demoset report</div><h1>{_e(page.title)}</h1>'
        f'<div class="sub">{sub}</div></div></header>'
        f'<nav><div class="wrap">{nav}</div></nav>'
        f'<main><div class="wrap">{"".join(body)}</div></main>'
        f"<footer>Made by demoset {_e(page.version)} on {_e(page.generated)}. "
        "Self-contained: every image is embedded in this file.</footer></body></html>\n"
    )
