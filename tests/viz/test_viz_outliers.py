"""Outlier checks: on hand-made arrays, and end to end on a dataset crafted to have outliers."""

from __future__ import annotations

import numpy as np

from demoset.format import DatasetWriter
from demoset.viz import outliers
from demoset.viz.report import build_report

CRAFTED = {
    ("demo_5", "long"),
    ("demo_3", "actions_at_bound"),
    ("demo_7", "black_frames"),
    ("demo_9", "frozen_frames"),
}


def write_outlier_dataset(path, image_compression=None) -> str:
    """Twelve ordinary demos, except: demo_5 is five times longer, demo_3 holds action dim 2
    at +1.0 for 30 steps, demo_7 has 13 black frames, demo_9 shows one frame for 26 steps.
    Dim 6 is a gripper (always -1 or +1) and must not be flagged."""
    rng = np.random.default_rng(7)
    with DatasetWriter(
        path,
        env_meta={"env_name": "Lift", "type": 1, "env_kwargs": {}},
        image_compression=image_compression,
    ) as w:
        for i in range(12):
            n = 160 if i == 5 else int(rng.integers(36, 45))
            actions = rng.uniform(-0.8, 0.8, (n, 7))
            actions[:, 6] = np.where(np.arange(n) < n // 2, -1.0, 1.0)
            frames = rng.integers(20, 256, (n, 16, 16, 3), dtype=np.uint8)
            if i == 3:
                actions[5:35, 2] = 1.0
            if i == 7:
                frames[8:21] = 0
            if i == 9:
                frames[4:30] = frames[4]
            w.add_demo(
                actions=actions,
                obs={
                    "agentview_image": frames,
                    "robot0_eef_pos": rng.standard_normal((n, 3)).astype(np.float32),
                },
                rewards=np.zeros(n),
                dones=np.zeros(n),
                states=rng.standard_normal((n, 5)),
                derive_next_obs=False,
            )
        w.set_filter_key("train", [f"demo_{i}" for i in range(10)])
        w.set_filter_key("valid", ["demo_10", "demo_11"])
    return str(path)


# ---------------------------------------------------------------------- array level
def test_robust_z_is_not_fooled_by_the_outlier_itself():
    lengths = [30, 31, 29, 30, 32, 28, 31, 300]
    z = outliers.robust_z(lengths)
    assert z[-1] > 50
    assert np.all(np.abs(z[:-1]) < 2)
    # a mean/std z-score of the same data would call the outlier barely unusual
    plain = (np.array(lengths) - np.mean(lengths)) / np.std(lengths)
    assert plain[-1] < 3


def test_robust_z_when_most_lengths_are_equal():
    z = outliers.robust_z([50] * 9 + [200])
    assert z[-1] > 3.5 and np.all(z[:-1] == 0)
    assert np.all(outliers.robust_z([50] * 5) == 0)


def test_length_outliers_flags_long_and_short_but_not_small_spread():
    demos = [f"demo_{i}" for i in range(10)]
    lengths = [100, 101, 99, 100, 102, 98, 100, 101, 400, 20]
    found = {(o.demo, o.kind) for o in outliers.length_outliers(demos, lengths)}
    assert found == {("demo_8", "long"), ("demo_9", "short")}
    # tightly clustered lengths: 108 is many MADs away but only 8 % longer
    tight = [100, 100, 101, 100, 99, 100, 100, 101, 100, 108]
    assert outliers.length_outliers(demos, tight) == []
    # too few demos to say
    assert outliers.length_outliers(demos[:3], [10, 10, 500]) == []


def test_action_bound_runs_and_switch_dims():
    actions = np.zeros((60, 3))
    actions[10:35, 1] = -1.0  # 25 steps at the lower bound
    actions[40:50, 0] = 1.0  # only 10 steps
    actions[:, 2] = 1.0  # a gripper held closed
    found = outliers.action_bound_outliers("demo_0", actions, min_run=20, skip_dims=[2])
    assert len(found) == 1
    o = found[0]
    assert (o.kind, o.start, o.stop, o.key) == ("actions_at_bound", 10, 35, "actions")
    assert "dim 1 at -1 for 25 steps" in o.message and "dim 0" not in o.message
    assert outliers.switch_like_dims(outliers.at_bound(actions).mean(axis=0)) == [2]
    lengths, starts = outliers.longest_runs(outliers.at_bound(actions))
    assert lengths.tolist() == [10, 25, 60] and starts.tolist() == [40, 10, 0]


def test_frame_outliers_black_and_frozen_with_every_frame():
    rng = np.random.default_rng(0)
    frames = rng.integers(30, 256, (50, 8, 8, 3), dtype=np.uint8)
    frames[5:9] = 0
    frames[20:45] = frames[20]
    found = {o.kind: o for o in outliers.frame_outliers("demo_1", "obs/cam", np.arange(50), frames)}
    assert set(found) == {"black_frames", "frozen_frames"}
    assert (found["black_frames"].start, found["black_frames"].stop) == (5, 9)
    assert (found["frozen_frames"].start, found["frozen_frames"].stop) == (20, 45)
    assert "sampled" not in found["frozen_frames"].message
    # the black run is identical frames too, but counted once, as black
    short = frames[:15]
    assert [
        o.kind for o in outliers.frame_outliers("d", "k", np.arange(15), short, min_frozen=3)
    ] == ["black_frames"]


def test_frame_outliers_on_sampled_frames():
    rng = np.random.default_rng(1)
    frames = rng.integers(30, 256, (300, 8, 8, 3), dtype=np.uint8)
    frames[100:200] = frames[100]
    idx = np.arange(0, 300, 10)
    found = outliers.frame_outliers("d", "k", idx, frames[idx])
    assert [o.kind for o in found] == ["frozen_frames"]
    assert (found[0].start, found[0].stop) == (100, 191)
    assert "sampled every 10 steps" in found[0].message
    clean = rng.integers(30, 256, (40, 8, 8, 3), dtype=np.uint8)
    assert outliers.frame_outliers("d", "k", np.arange(40), clean) == []


# ---------------------------------------------------------------------- dataset level
def test_report_flags_exactly_the_crafted_outliers(tmp_path):
    path = write_outlier_dataset(tmp_path / "odd.hdf5")
    result = build_report(
        path, tmp_path / "odd.html", clip_frames=8, n_plot_demos=2, plot_keys=["actions"]
    )
    assert {(o.demo, o.kind) for o in result.outliers} == CRAFTED
    by_kind = {o.kind: o for o in result.outliers}
    assert (by_kind["black_frames"].start, by_kind["black_frames"].stop) == (8, 21)
    assert (by_kind["frozen_frames"].start, by_kind["frozen_frames"].stop) == (4, 30)
    assert by_kind["actions_at_bound"].message.startswith("dim 2 at +1 for 30 steps")
    html = (tmp_path / "odd.html").read_text()
    for demo, _kind in CRAFTED:
        assert demo in html
    assert "dim 6 skipped" in html  # the gripper dimension was recognised, not flagged
    assert html.count('class="thumb"') == 2  # frames shown for the black and frozen runs


def test_frame_checks_still_work_on_a_sample_of_frames(tmp_path):
    scan_frames = 10
    path = write_outlier_dataset(tmp_path / "odd.hdf5")
    result = build_report(
        path,
        tmp_path / "odd.html",
        scan_frames=scan_frames,
        clips=False,
        run_validate=False,
        plot_keys=["actions"],
    )
    kinds = {(o.demo, o.kind) for o in result.outliers}
    assert ("demo_9", "frozen_frames") in kinds and ("demo_7", "black_frames") in kinds
    assert result.frames_read == 12 * scan_frames
