"""Small pieces of the simulator pipeline: flags, frame checks, pose maths, gym environments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from demoset.errors import ConversionError, SimulationError


def test_done_flags_follow_robomimic_done_modes():
    from demoset.sim.extract import done_flags

    success = np.array([False, True, False, True, True])
    assert done_flags(success, 0).tolist() == [0, 1, 0, 1, 1]
    assert done_flags(success, 1).tolist() == [0, 0, 0, 0, 1]
    assert done_flags(success, 2).tolist() == [0, 1, 0, 1, 1]
    assert done_flags(np.zeros(3, bool), 2).tolist() == [0, 0, 1]


def test_black_frames_are_found():
    from demoset.sim.extract import black_frame_indices

    frames = np.full((5, 4, 4, 3), 7, np.uint8)
    frames[1] = 0
    frames[3] = 0
    frames[4, 0, 0, 0] = 0  # one black pixel is not a black frame
    assert black_frame_indices(frames) == [1, 3]


def test_rot_6d_matches_robosuite_rotation_matrices():
    import robosuite.utils.transform_utils as T

    from demoset.convert.robosuite_raw import axis_angle_to_matrix, axis_angle_to_rot_6d

    rng = np.random.default_rng(0)
    aa = rng.uniform(-2, 2, (20, 3))
    aa[0] = 0.0
    mats = axis_angle_to_matrix(aa)
    for i in range(len(aa)):
        expected = T.quat2mat(T.axisangle2quat(aa[i]))
        np.testing.assert_allclose(mats[i], expected, atol=1e-6)  # robosuite computes in float32
    np.testing.assert_allclose(axis_angle_to_rot_6d(aa), mats[:, :2, :].reshape(-1, 6))


def test_pose_action_dict_keys_and_shapes():
    from demoset.convert.robosuite_raw import pose_action_dict

    actions = np.random.default_rng(1).uniform(-1, 1, (6, 7))
    d = pose_action_dict(actions, "rel_")
    assert {k: v.shape for k, v in d.items()} == {
        "rel_pos": (6, 3),
        "rel_rot_axis_angle": (6, 3),
        "rel_rot_6d": (6, 6),
        "gripper": (6, 1),
    }
    with pytest.raises(ConversionError):
        pose_action_dict(actions[:, :5], "abs_")


def test_env_meta_from_raw_attrs():
    from demoset.format import env_meta_from_raw_attrs

    info = {"env_name": "Lift", "robots": ["Panda"], "controller_configs": {"type": "BASIC"}}
    meta = env_meta_from_raw_attrs(
        {"env": "Lift", "env_info": json.dumps(info), "repository_version": "1.5.2"}
    )
    assert (meta.env_name, meta.env_type, meta.env_kwargs) == ("Lift", 1, info)
    assert meta.to_dict()["env_version"] == "1.5.2"
    with pytest.raises(ConversionError, match="env_info"):
        env_meta_from_raw_attrs({"env": "Lift", "env_info": "{not json"}, "raw.hdf5")
    with pytest.raises(ConversionError, match="env"):
        env_meta_from_raw_attrs({"env_info": "{}"})


def test_convert_refuses_a_file_that_is_not_raw(make_dataset, tmp_path):
    from demoset.convert.robosuite_raw import convert_robosuite_raw

    path = make_dataset()
    with pytest.raises(ConversionError, match="not a raw robosuite file"):
        convert_robosuite_raw(path, tmp_path / "out.hdf5")
    assert not (tmp_path / "out.hdf5").exists()


def test_select_demos_first_or_seeded():
    from demoset.viz.video import select_demos

    demos = [f"demo_{i}" for i in (10, 2, 1, 3, 7)]
    assert select_demos(demos) == ["demo_1", "demo_2", "demo_3", "demo_7", "demo_10"]
    assert select_demos(demos, 2) == ["demo_1", "demo_2"]
    picked = select_demos(demos, 3, seed=4)
    assert picked == select_demos(demos, 3, seed=4) and len(picked) == 3
    assert picked == sorted(picked, key=lambda d: int(d.split("_")[1]))


def test_side_by_side_and_depth_normalisation():
    from demoset.viz.video import as_rgb, side_by_side

    depth = np.linspace(0.5, 2.0, 2 * 6 * 8, dtype=np.float32).reshape(2, 6, 8, 1)
    gray = as_rgb(depth)
    assert gray.dtype == np.uint8 and gray.shape == (2, 6, 8, 3)
    assert gray.min() == 0 and gray.max() == 255
    image = np.full((2, 4, 5, 3), 9, np.uint8)
    joined = side_by_side([image, gray])
    assert joined.shape == (2, 6, 13, 3)
    assert np.all(joined[:, 4:, :5] == 0)  # the shorter panel is padded


def test_cameras_from_obs_keys():
    from demoset.sim import cameras_from_obs_keys

    assert cameras_from_obs_keys(
        ["object", "agentview_image", "hand_image", "agentview_depth"]
    ) == (
        ["agentview", "hand"],
        True,
    )


def test_make_env_refuses_unknown_types():
    from demoset.sim import make_env

    with pytest.raises(SimulationError, match="not supported"):
        make_env({"env_name": "x", "type": 3, "env_kwargs": {}})
    with pytest.raises(SimulationError, match="unknown environment type"):
        make_env({"env_name": "x", "type": 9, "env_kwargs": {}})
    with pytest.raises(SimulationError, match="JSON"):
        make_env("{oops")


def test_gym_environment_round_trip():
    """A gymnasium MuJoCo task through the same interface: state in, same observation out."""
    from demoset.sim import make_env

    env = make_env({"env_name": "InvertedPendulum-v5", "type": 2, "env_kwargs": {}})
    try:
        obs = env.reset()
        assert set(obs) == {"flat"} and env.action_dim == 1
        for _ in range(3):
            obs, reward, done, info = env.step(np.array([0.5]))
        state = env.get_state()
        assert state["model"] is None and state["states"].shape == (4,)
        after, *_ = env.step(np.array([-0.5]))
        again = env.reset_to(state)
        np.testing.assert_allclose(again["flat"], obs["flat"])
        replayed, *_ = env.step(np.array([-0.5]))
        np.testing.assert_allclose(replayed["flat"], after["flat"])
        meta = env.env_meta
        assert meta.env_type == 2 and meta.env_name == "InvertedPendulum-v5"
        with pytest.raises(SimulationError, match="needs 4"):
            env.reset_to({"states": np.zeros(3)})
    finally:
        env.close()


def test_gym_environment_renders_offscreen():
    from demoset.sim import make_env

    env = make_env(
        {"env_name": "InvertedPendulum-v5", "type": 2, "env_kwargs": {}}, render_offscreen=True
    )
    try:
        env.reset()
        frame = env.render("", 40, 60)
        assert frame.shape == (40, 60, 3) and frame.dtype == np.uint8 and frame.max() > 0
    finally:
        env.close()


def test_classic_control_state_round_trip():
    """Environments without MuJoCo data are reset through their `state` vector."""
    from demoset.sim import make_env

    env = make_env({"env_name": "Pendulum-v1", "type": 2, "env_kwargs": {}})
    try:
        env.reset()
        env.step(np.array([1.0]))
        state = env.get_state()["states"]
        after, *_ = env.step(np.array([1.0]))
        env.step(np.array([-2.0]))
        env.reset_to({"states": state})
        replayed, *_ = env.step(np.array([1.0]))
        np.testing.assert_allclose(replayed["flat"], after["flat"])
    finally:
        env.close()


def test_extract_obs_from_gym_states(tmp_path):
    """extract-obs on a gymnasium MuJoCo dataset: observations rebuilt from qpos/qvel states."""
    from demoset.format import DatasetWriter, open_dataset
    from demoset.sim import make_env
    from demoset.sim.extract import extract_obs

    meta = {"env_name": "InvertedPendulum-v5", "type": 2, "env_kwargs": {}}
    env = make_env(meta)
    rng = np.random.default_rng(0)
    source = tmp_path / "pendulum.hdf5"
    recorded = []
    with DatasetWriter(source, env_meta=meta) as writer:
        for seed in (1, 2):
            obs = env.reset(seed=seed)
            states, observations, actions, rewards = [], [], [], []
            for _ in range(8):
                states.append(env.get_state()["states"])
                observations.append(obs["flat"])
                action = rng.uniform(-0.2, 0.2, 1)
                obs, reward, _, _ = env.step(action)
                actions.append(action)
                rewards.append(reward)
            recorded.append((np.array(observations), obs["flat"]))
            writer.add_demo(
                actions=np.array(actions), states=np.array(states), rewards=np.array(rewards)
            )
    env.close()

    out = tmp_path / "extracted.hdf5"
    report = extract_obs(source, out, copy_rewards=True, done_mode=1)
    assert report.demos == 2 and report.frames == 16
    with open_dataset(out) as df:
        for demo, (observations, final) in zip(df.demos, recorded):
            np.testing.assert_allclose(df.read(demo, "obs/flat"), observations, atol=1e-12)
            np.testing.assert_allclose(df.read(demo, "next_obs/flat")[-1], final, atol=1e-12)
            assert df.read(demo, "dones").tolist() == [0] * 7 + [1]
    with pytest.raises(SimulationError, match="robosuite option"):
        extract_obs(source, tmp_path / "shaped.hdf5", shaped=True)


def test_render_resources_compare_meshes_textures_and_visual_settings():
    """A rendering context is kept only for models that draw alike (see _load_model_xml)."""
    import mujoco

    from demoset.sim.robosuite_env import same_render_resources

    def model(box: str = "0.1 0.1 0.1", vert: str = "0 0 0  1 0 0  0 1 0  0 0 1", extra=""):
        return mujoco.MjModel.from_xml_string(
            f"""<mujoco><asset><mesh name="m" vertex="{vert}"/>
            <texture name="t" type="2d" builtin="checker" width="8" height="8"/>
            <material name="mat" texture="t"/></asset>{extra}
            <worldbody><geom type="mesh" mesh="m" material="mat"/>
            <body><freejoint/><geom type="box" size="{box}"/></body></worldbody></mujoco>"""
        )

    base = model()
    assert same_render_resources(base, model())
    assert same_render_resources(base, model(box="0.1 0.12 0.1"))  # physics only
    assert not same_render_resources(base, model(vert="0 0 0  2 0 0  0 1 0  0 0 1"))
    assert not same_render_resources(
        base, model(extra='<visual><quality offsamples="0"/></visual>')
    )
    changed = model()
    changed.tex_data[0] ^= 0xFF
    assert not same_render_resources(base, changed)
