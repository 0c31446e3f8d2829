"""`demoset report`: one self-contained HTML file, built from a sample of the frames."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from html.parser import HTMLParser

import h5py
import numpy as np
import pytest
from PIL import Image

from demoset.cli.main import main
from demoset.errors import LayoutError, WriteError
from demoset.format import DatasetWriter, open_dataset
from demoset.viz.report import build_report
from demoset.viz.sampling import sample_demos, spaced_indices

from tests.helpers import write_dataset

SPLIT = {"train": [f"demo_{i}" for i in range(7)], "valid": ["demo_7", "demo_8"]}


class PageParser(HTMLParser):
    """Every tag with its attributes, and the text, of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(path) -> PageParser:
    parser = PageParser()
    parser.feed(open(path, encoding="utf-8").read())
    return parser


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    head, payload = uri.split(",", 1)
    assert head.startswith("data:") and head.endswith(";base64")
    return head[5:-7], base64.b64decode(payload)


def test_report_is_one_self_contained_file(make_dataset, tmp_path):
    path = make_dataset(n_demos=9, cameras=("agentview", "robot0_eye_in_hand"), filter_keys=SPLIT)
    out = tmp_path / "report.html"
    result = build_report(path, out, n_camera_demos=3, clip_frames=6, n_plot_demos=2)
    page = parse(out)
    tags = [t for t, _ in page.tags]
    # nothing to fetch: no scripts, stylesheets, frames, and every image is embedded
    assert not {"script", "link", "iframe", "object", "embed"} & set(tags)
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "srcset", "poster"):
                assert value.startswith(("data:", "#")), (tag, name, value[:60])
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    kinds = [decode_data_uri(src)[0] for src in images]
    # 5 plots, 2 cameras x 3 demos x (clip + strip)
    assert kinds.count("image/png") == 5 + 2 * 3 and kinds.count("image/webp") == 2 * 3
    for src in images:
        mime, data = decode_data_uri(src)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.width > 0 and im.height > 0
            if mime == "image/webp":
                assert im.n_frames == 6 and im.is_animated
    # the sections and the numbers of `demoset info`
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert {
        "outliers",
        "validation",
        "cameras",
        "plots",
        "filter-keys",
        "structure",
        "environment",
    } <= ids
    text = " ".join(page.text)
    with open_dataset(path) as df:
        transitions = int(df.lengths().sum())
    assert f"{transitions:,}" in text and "Lift" in text
    assert "obs/agentview_image" in text and "obs/robot0_eye_in_hand_image" in text
    assert "demoset validate found no problems" in text
    assert (
        result.num_demos == 9 and result.findings == [] and result.size_bytes == out.stat().st_size
    )
    assert result.plots == [
        "lengths",
        "action_histograms",
        "trajectory_actions",
        "trajectory_obs_object",
        "trajectory_obs_robot0_eef_pos",
    ]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp file left


def test_report_reads_only_the_sampled_frames(tmp_path):
    """Every frame the report should not need is made unreadable; the report still works."""
    path = write_dataset(
        tmp_path / "big.hdf5",
        n_demos=30,
        min_len=40,
        max_len=60,
        cameras=("agentview", "wrist"),
        image_compression="gzip",
    )
    scan_demos, scan_frames = 4, 6
    with open_dataset(path) as df:
        lengths = dict(zip(df.demos, df.lengths().tolist()))
    needed = {
        d: set(spaced_indices(lengths[d], scan_frames).tolist())
        for d in sample_demos(list(lengths), scan_demos, seed=0)
    }
    spoiled = []
    with h5py.File(path, "r") as f:
        for demo, n in lengths.items():
            for key in ("obs/agentview_image", "obs/wrist_image"):
                dset = f[f"data/{demo}/{key}"]
                for i in range(n):
                    if i not in needed.get(demo, ()):
                        info = dset.id.get_chunk_info_by_coord((i, 0, 0, 0))
                        spoiled.append((info.byte_offset, info.size))
    with open(path, "r+b") as fh:
        for offset, size in spoiled:
            fh.seek(offset)
            fh.write(b"\xff" * size)
    with open_dataset(path) as df:  # the spoiling is real: an unneeded frame cannot be read
        unneeded = next(d for d in df.demos if d not in needed)
        with pytest.raises(LayoutError):
            df.read(unneeded, "obs/agentview_image", 0, 1)

    result = build_report(
        path,
        tmp_path / "r.html",
        scan_demos=scan_demos,
        scan_frames=scan_frames,
        n_camera_demos=2,
        clip_frames=4,
        n_plot_demos=1,
        plot_keys=["actions"],
    )
    assert result.frames_read == scan_demos * scan_frames * 2
    assert result.frames_total == sum(lengths.values()) * 2
    assert result.frames_read < result.frames_total / 10


def test_report_shows_findings_and_escapes_what_the_file_says(tmp_path):
    path = tmp_path / "odd.hdf5"
    evil = "<img src=x onerror=alert(1)>"
    rng = np.random.default_rng(0)
    with DatasetWriter(
        path, env_meta={"env_name": "<b>Lift</b>", "type": 1, "env_kwargs": {}}
    ) as w:
        for _ in range(3):
            w.add_demo(actions=rng.uniform(-3, 3, (10, 2)), obs={"x": rng.standard_normal((10, 2))})
        w.set_filter_key(evil, ["demo_0"])
    out = tmp_path / "r.html"
    result = build_report(path, out, n_plot_demos=1, plot_keys=["actions"])
    assert [f.code for f in result.findings] == ["actions_out_of_range"]
    html = out.read_text()
    assert evil not in html and "<b>Lift</b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;Lift&lt;/b&gt;" in html
    text = " ".join(parse(out).text)
    assert "actions outside [-1, 1]" in text and "/data/*/actions" in text
    assert "This dataset has no camera observations." in text


def test_report_of_a_depth_camera_and_a_filter_key(tmp_path):
    path = tmp_path / "depth.hdf5"
    rng = np.random.default_rng(0)
    with DatasetWriter(path, env_meta={"env_name": "Lift", "type": 1, "env_kwargs": {}}) as w:
        for _ in range(4):
            n = int(rng.integers(10, 20))
            w.add_demo(
                actions=rng.uniform(-1, 1, (n, 3)),
                obs={"agentview_depth": rng.uniform(0.5, 2.0, (n, 12, 12, 1)).astype(np.float32)},
            )
        w.set_filter_key("some", ["demo_1", "demo_2"])
    result = build_report(
        path, tmp_path / "r.html", filter_key="some", n_camera_demos=4, clips=False
    )
    assert result.num_demos == 2 and result.frames_read == result.frames_total
    html = (tmp_path / "r.html").read_text()
    assert re.findall(r'class="name mono">([^<]*)<', html) == ["demo_1", "demo_2"]
    assert "12×12 depth, float32" in " ".join(parse(tmp_path / "r.html").text)


def test_report_cli(make_dataset, tmp_path, capsys):
    path = make_dataset(n_demos=6, cameras=("agentview",))
    out = tmp_path / "r.html"
    fast = ["--plot-demos", "1", "--keys", "actions", "--scan-frames", "5", "--num-demos", "1"]
    assert main(["report", path, "--out", str(out), "--no-clips"] + fast) == 0
    stdout = capsys.readouterr().out
    assert (
        f"wrote {out}" in stdout and "6 demos; validate: 0 errors, 0 warnings; 0 outliers" in stdout
    )
    assert out.exists() and "image/webp" not in out.read_text()

    assert main(["report", path, "--out", str(out), "--json", "--no-validate"] + fast) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_demos"] == 6 and data["findings"] is None and data["outliers"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--filter-key", "nope"], "no filter key 'nope'"),
        (["--out", "/nonexistent-folder/r.html"], "the folder does not exist"),
    ],
)
def test_report_cli_errors_leave_nothing(make_dataset, tmp_path, capsys, args, message):
    path = make_dataset(n_demos=3)
    out = tmp_path / "r.html"
    before = os.path.getmtime(path), os.path.getsize(path)
    code = main(["report", path, "--out", str(out)] + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    assert (os.path.getmtime(path), os.path.getsize(path)) == before


def test_build_report_refuses_unwritable_output_before_reading(make_dataset, tmp_path):
    path = make_dataset(n_demos=3)
    with pytest.raises(WriteError, match="a folder has this name"):
        build_report(path, tmp_path)


def test_report_and_plots_of_a_file_without_demos(tmp_path):
    path = tmp_path / "empty.hdf5"
    with DatasetWriter(path, env_meta={"env_name": "Lift", "type": 1, "env_kwargs": {}}):
        pass
    result = build_report(path, tmp_path / "r.html")
    assert result.num_demos == 0 and [f.code for f in result.findings] == ["no_demos"]
    assert "Nothing to plot" in (tmp_path / "r.html").read_text()
    assert main(["plot", str(path), "--out", str(tmp_path / "plots")]) == 0
    assert os.listdir(tmp_path / "plots") == []
