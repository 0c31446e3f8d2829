"""`demoset doctor`: each planted problem is found, with its demos, steps and severity."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.doctor import diagnose
from demoset.format import DatasetWriter

from tests.helpers import LIFT_ENV

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "lift_example.hdf5")
N = 30


def frames_of(rng, n):
    """A moving picture: every frame differs from the one before."""
    base = rng.integers(20, 230, (16, 16, 3), dtype=np.uint8)
    return np.stack([np.roll(base, t, axis=1) for t in range(n)]) + np.uint8(0)


@pytest.fixture(scope="module")
def sick(tmp_path_factory):
    """Eight demos, most of them with one planted problem."""
    path = tmp_path_factory.mktemp("doctor") / "sick.hdf5"
    rng = np.random.default_rng(0)
    demos = []
    for _ in range(8):
        obs = {
            "pos": rng.standard_normal((N, 3)).astype(np.float32),
            "flag": np.ones((N, 1), np.float32),  # constant everywhere
            "cam_image": frames_of(rng, N),
        }
        actions = rng.uniform(-0.9, 0.9, (N, 4))
        actions[:, 3] = np.where(rng.random(N) < 0.5, -1.0, 1.0)  # a gripper: switch-like
        rewards = np.zeros(N)
        rewards[-1] = 1.0
        demos.append(
            {
                "obs": obs,
                "actions": actions,
                "rewards": rewards,
                "states": rng.standard_normal((N, 5)),
            }
        )
    demos[1]["obs"]["cam_image"][5:9] = 0  # black frames
    demos[2]["obs"]["cam_image"][10:] = demos[2]["obs"]["cam_image"][10]  # frozen from step 10
    demos[3]["obs"]["cam_image"][:] = demos[4]["obs"]["cam_image"]  # camera copied from demo_4
    demos[5]["rewards"][:] = 0  # never succeeds
    demos[6] = {
        k: (dict(v) if isinstance(v, dict) else v.copy()) for k, v in demos[0].items()
    }  # duplicate
    demos[7]["actions"][:, 0] = np.where(np.arange(N) % 3 == 0, 1.0, demos[7]["actions"][:, 0])
    demos[7]["obs"]["cam_image"][20] = 255  # one saturated frame
    for d in demos[:7]:
        d["actions"][: N // 3, 1] = 1.0  # dim 1 pinned a third of the time
    with DatasetWriter(path, env_meta=LIFT_ENV) as w:
        for d in demos:
            w.add_demo(
                actions=d["actions"],
                obs=d["obs"],
                rewards=d["rewards"],
                states=d["states"],
                derive_next_obs=True,
            )
    with h5py.File(path, "a") as h5:  # demo_4's next_obs is its obs, not the next one
        h5["data/demo_4/next_obs/pos"][...] = h5["data/demo_4/obs/pos"][...]
        h5["data/demo_2/obs/pos"][3] += 10  # changed in place: its stored statistics are stale
        h5["data/demo_2/next_obs/pos"][2] += 10
    return str(path)


def by_check(report, check):
    return [f for f in report.findings if f.check == check]


def test_every_planted_problem_is_found(sick):
    report = diagnose(sick, replay=False)
    black = by_check(report, "black_frames")
    assert [(f.demos, f.start, f.stop, f.severity) for f in black] == [(("demo_1",), 5, 9, "error")]
    frozen = by_check(report, "frozen_frames")
    assert [(f.demos, f.start) for f in frozen] == [(("demo_2",), 10)]
    saturated = by_check(report, "saturated_frames")
    assert [(f.demos, f.start, f.severity) for f in saturated] == [(("demo_7",), 20, "error")]
    shared = {f.demos for f in by_check(report, "duplicate_frames")}
    assert ("demo_3", "demo_4") in shared and ("demo_0", "demo_6") in shared
    (no_success,) = by_check(report, "no_success")
    assert no_success.demos == ("demo_5",) and no_success.severity == "warning"
    (dup,) = by_check(report, "duplicate_demo")
    assert dup.demos == ("demo_0", "demo_6")
    mismatch = by_check(report, "next_obs_mismatch")
    assert [(f.demos, f.key, f.severity) for f in mismatch] == [(("demo_4",), "obs/pos", "error")]
    (stale,) = by_check(report, "stale_stats")
    assert (stale.demos, stale.key, stale.severity) == (("demo_2",), "obs/pos", "error")
    constant = by_check(report, "constant_key")
    assert [(f.key, f.severity) for f in constant] == [("obs/flag", "warning")]
    saturation = [f for f in by_check(report, "action_saturation") if f.severity == "warning"]
    assert len(saturation) == 1 and "dim 1" in saturation[0].message
    assert "dim 3" not in saturation[0].message  # the gripper is switch-like, not clipped
    assert report.has_errors
    assert [f.severity for f in report.findings] == sorted(
        (f.severity for f in report.findings), key=["error", "warning", "info"].index
    )


def test_a_healthy_file_has_no_errors(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "ok.hdf5"
    with DatasetWriter(path, env_meta=LIFT_ENV) as w:
        for _ in range(4):
            rewards = np.zeros(N)
            rewards[-1] = 1
            w.add_demo(
                actions=rng.uniform(-0.5, 0.5, (N, 3)),
                obs={"pos": rng.standard_normal((N, 2)), "cam_image": frames_of(rng, N)},
                rewards=rewards,
                derive_next_obs=True,
            )
    report = diagnose(path, replay=False)
    assert [f for f in report.findings if f.severity != "info"] == []


def test_cli_exit_codes_json_and_report_section(sick, tmp_path, capsys):
    assert main(["doctor", sick, "--no-replay"]) == 1
    out = capsys.readouterr().out
    assert "black_frames" in out and "FAILED" in out
    assert main(["doctor", sick, "--no-replay", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["counts"]["error"] >= 3
    html = tmp_path / "r.html"
    assert main(["report", sick, "--out", str(html), "--doctor", "--no-clips"]) == 0
    page = html.read_text()
    assert 'id="doctor"' in page and "saturated_frames" in page
    assert main(["doctor", str(tmp_path / "missing.hdf5")]) == 2


@pytest.mark.sim
def test_replay_finds_actions_that_do_not_belong_to_the_states(tmp_path):
    good = diagnose(EXAMPLE, replay_demos=2, frames_per_demo=10)
    assert not by_check(good, "replay_divergence")
    (info,) = by_check(good, "replay")
    assert max(info.details.values()) < 1e-6  # the example's actions reproduce its states
    shifted = tmp_path / "shifted.hdf5"
    shutil.copy(EXAMPLE, shifted)
    with h5py.File(shifted, "a") as h5:
        actions = h5["data/demo_1/actions"][...]
        h5["data/demo_1/actions"][...] = -actions  # recorded with another sign convention
    bad = diagnose(shifted, replay_demos=None, frames_per_demo=10)
    errors = [f for f in by_check(bad, "replay_divergence") if f.severity == "error"]
    assert [f.demos for f in errors] == [("demo_1",)]
