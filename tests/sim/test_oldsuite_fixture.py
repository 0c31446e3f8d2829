"""Observations extracted under robosuite 1.5 from a robosuite 1.4.1 recording equal the old stack's.

The reference is robomimic 0.3.0's dataset_states_to_obs.py run under robosuite 1.4.1 +
mujoco 2.3.7 on the same recording (tests/fixtures/oldsuite, made by
scripts/old_stack/build_fixture.sh). Measured on this fixture (docs/sim.md):
- every low-dim key both have is equal to within 1e-15 on obs, and on next_obs but for
  the last step (simulated afresh from the last state, see below);
- robot0_eye_in_hand_image ~80 dB PSNR; agentview_image ~26.6 dB: the floor's tiled
  texture behind the table is drawn differently by MuJoCo 3.3.7 than by 2.3.7 (rows
  12-21 of 84; the robot, table and cube agree to a grey level).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.convert.robosuite_raw import convert_robosuite_raw
from demoset.sim.extract import extract_obs

from tests.sim import oldsuite_support as support
from tests.sim.oldsuite_support import LAYOUT_V13, RAW_V141, REFERENCE_V141, psnr

assets_141, offline = support.assets_141, support.offline  # fixtures used here

CAMERAS = ("agentview", "robot0_eye_in_hand")
LOW_DIM_TOL = 1e-6
EYE_IN_HAND_MIN_DB = 35.0
AGENTVIEW_MIN_DB = 25.0  # measured 26.6: MuJoCo 3's floor texture (see module docstring)
OUTSIDE_FLOOR_MIN_DB = 50.0  # measured 58.8-84.6 per demo


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("oldsuite") / "v141.hdf5"
    convert_robosuite_raw(RAW_V141, out)
    return out


def _shared_low_dim(ours, ref, group):
    keys = sorted(k for k in set(ours[group]) & set(ref[group]) if not k.endswith("_image"))
    return keys


def test_conversion_matches_robomimics(converted):
    with h5py.File(converted, "r") as ours, h5py.File(REFERENCE_V141, "r") as ref:
        assert sorted(ours["data"]) == sorted(ref["data"]) == ["demo_1", "demo_2", "demo_3"]
        for demo in ref["data"]:
            for key in ("states", "actions"):
                np.testing.assert_array_equal(ours["data"][demo][key], ref["data"][demo][key])
            assert ours["data"][demo].attrs["model_file"] == ref["data"][demo].attrs["model_file"]


@pytest.mark.sim
def test_low_dim_observations_equal_the_old_stack(converted, tmp_path, offline):
    out = tmp_path / "low_dim.hdf5"
    extract_obs(converted, out, done_mode=2)
    with h5py.File(out, "r") as ours, h5py.File(REFERENCE_V141, "r") as ref:
        for demo in ref["data"]:
            o, r = ours["data"][demo], ref["data"][demo]
            keys = _shared_low_dim(o, r, "obs")
            assert {"object", "robot0_eef_pos", "robot0_joint_pos", "robot0_gripper_qpos"} <= set(
                keys
            )
            for key in keys:
                np.testing.assert_allclose(o["obs"][key], r["obs"][key], rtol=0, atol=LOW_DIM_TOL)
                # next_obs[t] = obs[t+1] for every step but the last, which both tools step
                # afresh from the last state (different MuJoCo and controller code).
                np.testing.assert_allclose(
                    o["next_obs"][key][:-1], r["next_obs"][key][:-1], rtol=0, atol=LOW_DIM_TOL
                )
            np.testing.assert_array_equal(o["rewards"], r["rewards"])
            np.testing.assert_array_equal(o["dones"], r["dones"])
        env_args = ours["data"].attrs["env_args"]
        assert '"recorded_env_version": "1.4.1"' in env_args


@pytest.mark.sim
def test_camera_images_match_the_old_stack(converted, tmp_path, offline):
    out = tmp_path / "images.hdf5"
    extract_obs(converted, out, camera_names=CAMERAS, n=1)
    with h5py.File(out, "r") as ours, h5py.File(REFERENCE_V141, "r") as ref:
        o, r = ours["data/demo_1/obs"], ref["data/demo_1/obs"]
        scores = {}
        for camera in CAMERAS:
            key = f"{camera}_image"
            assert o[key].shape == r[key].shape == (48, 84, 84, 3)
            scores[camera] = psnr(o[key][()], r[key][()])
        print("PSNR vs robosuite 1.4.1 + mujoco 2.3.7:", scores)
        assert scores["robot0_eye_in_hand"] >= EYE_IN_HAND_MIN_DB
        assert scores["agentview"] >= AGENTVIEW_MIN_DB
        # Outside the band of floor behind the table (rows 12-21) the frames agree closely.
        rows = np.r_[0:12, 22:84]
        rest = psnr(o["agentview_image"][:, rows], r["agentview_image"][:, rows])
        print(f"agentview without the floor band: {rest:.1f} dB")
        assert rest >= OUTSIDE_FLOOR_MIN_DB


@pytest.mark.sim
def test_robosuite_10_13_layout_converts_and_extracts(converted, tmp_path, offline):
    for source in (LAYOUT_V13, LAYOUT_V13 / "demo.hdf5"):
        out = tmp_path / f"v13_{source.name}.hdf5"
        report = convert_robosuite_raw(source, out)
        assert report.demos == 3
        with h5py.File(out, "r") as ours, h5py.File(converted, "r") as ref:
            assert sorted(ours["data"]) == ["demo_1", "demo_2", "demo_3"]
            for demo in ref["data"]:
                model = ours["data"][demo].attrs["model_file"]
                assert model.lstrip().startswith("<mujoco")
                assert model == ref["data"][demo].attrs["model_file"]
                np.testing.assert_array_equal(
                    ours["data"][demo]["states"], ref["data"][demo]["states"]
                )
    extracted = tmp_path / "v13_obs.hdf5"
    extract_obs(out, extracted, n=1)
    with h5py.File(extracted, "r") as ours, h5py.File(REFERENCE_V141, "r") as ref:
        for key in _shared_low_dim(ours["data/demo_1"], ref["data/demo_1"], "obs"):
            np.testing.assert_allclose(
                ours["data/demo_1/obs"][key], ref["data/demo_1/obs"][key], atol=LOW_DIM_TOL
            )


@pytest.mark.sim
def test_open_loop_replay_reports_divergence_per_demo(converted, offline):
    from demoset.sim.playback import replay_dataset

    results = replay_dataset(str(converted))
    assert [r.demo for r in results] == ["demo_1", "demo_2", "demo_3"]
    for result in results:
        assert result.steps == 48 and np.isfinite(result.errors[:-1]).all()
        # robosuite 1.5 + MuJoCo 3 do not reproduce 1.4.1 + MuJoCo 2.3.7 bit for bit: the
        # replay leaves the stored states at once (gripper fingers, cube contact) but stays
        # close enough that every scripted grasp still lifts the cube.
        assert result.diverged and result.max_error < 0.5
        assert result.success


@pytest.mark.sim
def test_cli_refuses_a_robosuite_03_file_in_one_line(make_dataset, tmp_path, capsys):
    env_meta = {
        "env_name": "SawyerPickPlaceCanTeleop",
        "type": 1,
        "env_kwargs": {"gripper_visualization": False, "control_freq": 100},
    }
    path = make_dataset(n_demos=2, env_meta=env_meta)
    out = tmp_path / "never.hdf5"
    code = main(["extract-obs", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "robosuite 0.x" in err and "extraction" in err
    assert not out.exists()
