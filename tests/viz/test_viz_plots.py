"""`demoset plot` / make_plots: PNG files of trajectories, lengths and action histograms."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from demoset.cli.main import main
from demoset.viz import collect
from demoset.viz.plots import GROUP_COLOURS, OUTLIER_COLOUR, make_plots
from demoset.viz.sampling import sample_demos, spaced_indices

SPLIT = {"train": [f"demo_{i}" for i in range(8)], "valid": ["demo_8", "demo_9"]}


def _has_colour(png_path, hex_colour: str, min_pixels: int = 20) -> bool:
    rgb = np.asarray(Image.open(png_path).convert("RGB")).reshape(-1, 3)
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int(np.all(np.abs(rgb.astype(int) - target) <= 3, axis=1).sum()) >= min_pixels


def test_sample_demos_is_seeded_and_numeric():
    demos = [f"demo_{i}" for i in range(30)]
    a = sample_demos(demos, 5, seed=3)
    assert a == sample_demos(demos, 5, seed=3)
    assert a != sample_demos(demos, 5, seed=4)
    assert len(set(a)) == 5 and a == sorted(a, key=lambda d: int(d.split("_")[1]))
    assert sample_demos(demos, None) == demos and sample_demos(demos, 99) == demos


def test_spaced_indices():
    assert spaced_indices(5, 10).tolist() == [0, 1, 2, 3, 4]
    idx = spaced_indices(1000, 7)
    assert idx[0] == 0 and idx[-1] == 999 and len(idx) == 7 and np.all(np.diff(idx) > 0)
    assert spaced_indices(0, 4).size == 0


def test_find_partition_prefers_train_valid():
    demos = [f"demo_{i}" for i in range(6)]
    members = {
        "a": demos[:3],
        "b": demos[3:],
        "train": demos[:4],
        "valid": demos[4:],
        "overlap": demos[2:5],
    }
    assert collect.find_partition(demos, members) == ["train", "valid"]
    del members["train"]
    assert collect.find_partition(demos, members) == ["a", "b"]
    assert collect.find_partition(demos, {"overlap": demos[2:5]}) == []


def test_make_plots_writes_every_plot_with_filter_keys_coloured(make_dataset, tmp_path):
    path = make_dataset(n_demos=10, filter_keys=SPLIT)
    calls = []
    written = make_plots(path, tmp_path / "plots", progress=lambda d, t: calls.append((d, t)))
    names = sorted(os.path.basename(p) for p in written)
    assert names == [
        "action_histograms.png",
        "lengths.png",
        "trajectory_actions.png",
        "trajectory_obs_object.png",
        "trajectory_obs_robot0_eef_pos.png",
    ]
    for p in written:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width >= 1000 and im.height >= 250
    # train and valid are drawn in their own colours
    lengths_png = tmp_path / "plots" / "lengths.png"
    assert _has_colour(lengths_png, GROUP_COLOURS[0]) and _has_colour(lengths_png, GROUP_COLOURS[1])
    assert _has_colour(tmp_path / "plots" / "action_histograms.png", GROUP_COLOURS[1])
    # progress goes forward and ends complete
    assert calls and calls[-1][0] == calls[-1][1]
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))


def test_plots_without_filter_keys_use_one_colour(make_dataset, tmp_path):
    path = make_dataset(n_demos=6)
    make_plots(path, tmp_path, keys=["actions"])
    assert _has_colour(tmp_path / "lengths.png", GROUP_COLOURS[0])
    assert not _has_colour(tmp_path / "lengths.png", GROUP_COLOURS[1], min_pixels=1)
    assert not (tmp_path / "trajectory_obs_object.png").exists()


def test_plot_cli_demos_keys_and_filter_key(make_dataset, tmp_path, capsys):
    path = make_dataset(n_demos=10, filter_keys=SPLIT)
    out = tmp_path / "out"
    code = main(
        [
            "plot",
            path,
            "--out",
            str(out),
            "--demo",
            "demo_1",
            "demo_2",
            "--keys",
            "robot0_eef_pos",
            "--filter-key",
            "valid",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert sorted(os.path.basename(p) for p in printed) == [
        "action_histograms.png",
        "lengths.png",
        "trajectory_obs_robot0_eef_pos.png",
    ]
    assert all(os.path.exists(p) for p in printed)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--keys", "no_such_key"], "no array 'no_such_key'"),
        (["--demo", "demo_99"], "no demo named 'demo_99'"),
        (["--filter-key", "nope"], "no filter key 'nope'"),
    ],
)
def test_plot_cli_bad_input_is_one_line_exit_2(make_dataset, tmp_path, capsys, extra, message):
    path = make_dataset(n_demos=4)
    code = main(["plot", path, "--out", str(tmp_path / "o")] + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and path in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_lengths_plot_rings_length_outliers(tmp_path):
    from tests.viz.test_viz_outliers import write_outlier_dataset

    path = write_outlier_dataset(tmp_path / "odd.hdf5")
    make_plots(path, tmp_path / "odd", keys=["actions"])
    assert _has_colour(tmp_path / "odd" / "lengths.png", OUTLIER_COLOUR)
    make_plots(path, tmp_path / "valid", keys=["actions"], filter_key="valid")
    assert not _has_colour(tmp_path / "valid" / "lengths.png", OUTLIER_COLOUR, min_pixels=1)
