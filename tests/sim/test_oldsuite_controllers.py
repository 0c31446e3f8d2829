"""robosuite <= 1.4 controller configs and arguments as robosuite 1.5 composite controllers."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from demoset.errors import SimulationError
from demoset.sim.legacy_check import check_scene_rebuildable
from demoset.sim.legacy_controllers import modern_env_kwargs

from tests.sim import oldsuite_support as support
from tests.sim.oldsuite_support import RAW_V141

assets_141, offline = support.assets_141, support.offline  # fixtures used here


def _stored_env_info() -> dict:
    with h5py.File(RAW_V141, "r") as f:
        return json.loads(f["data"].attrs["env_info"])


def test_osc_pose_of_141_becomes_a_basic_composite_controller():
    stored = _stored_env_info()
    assert stored["controller_configs"]["type"] == "OSC_POSE"
    kwargs = modern_env_kwargs(stored, "1.4.1")
    config = kwargs["controller_configs"]
    assert config["type"] == "BASIC"
    right = config["body_parts"]["right"]
    assert right["type"] == "OSC_POSE"
    assert right["input_type"] == "delta" and "control_delta" not in right
    assert right["input_ref_frame"] == "world"
    assert right["gripper"] == {"type": "GRIP"}
    assert right["kp"] == stored["controller_configs"]["kp"]
    assert kwargs["lite_physics"] is False
    assert stored["controller_configs"]["type"] == "OSC_POSE"  # input not modified


def test_other_part_controllers_and_renamed_arguments():
    stored = {
        "robots": ["Baxter"],
        "mount_types": "default",
        "controller_configs": {"type": "JOINT_VELOCITY", "kp": 3.0, "velocity_limits": [-1, 1]},
    }
    kwargs = modern_env_kwargs(stored, None)  # a <= 1.4 config says enough without a version
    assert "mount_types" not in kwargs and kwargs["base_types"] == "default"
    parts = kwargs["controller_configs"]["body_parts"]
    assert parts["right"]["type"] == parts["left"]["type"] == "JOINT_VELOCITY"
    absolute = modern_env_kwargs(
        {"robots": "Panda", "controller_configs": {"type": "OSC_POSE", "control_delta": False}},
        "1.4.1",
    )
    assert absolute["controller_configs"]["body_parts"]["right"]["input_type"] == "absolute"
    two = modern_env_kwargs(
        {"robots": ["Panda", "Sawyer"], "controller_configs": {"type": "OSC_POSITION"}}, "1.4.1"
    )
    assert len(two["controller_configs"]) == 2


def test_robosuite_15_arguments_are_left_alone():
    current = {"robots": "Panda", "controller_configs": {"type": "BASIC", "body_parts": {}}}
    assert modern_env_kwargs(current, "1.5.2") == current


@pytest.mark.sim
def test_environment_of_a_141_dataset_runs_the_mapped_controller(offline):
    from demoset.format import EnvMeta
    from demoset.sim.factory import make_env

    meta = EnvMeta("Lift", 1, _stored_env_info(), {"env_version": "1.4.1"})
    env = make_env(meta)
    try:
        controller = env.env.robots[0].part_controllers["right"]
        assert type(controller).__name__ == "OperationalSpaceController"
        assert controller.input_ref_frame == "world"
        assert env.env.lite_physics is False
        assert env.action_dim == 7
        out = env.env_meta
        assert out.extra["recorded_env_version"] == "1.4.1"
        assert out.env_kwargs["controller_configs"]["type"] == "BASIC"
        # As a rollout uses it: hard resets rebuild the sensors; Lift's gripper-to-cube
        # vector keeps robosuite 1.4's sign (gripper minus cube) through them.
        for _ in range(2):
            env.reset()
            obs, _, _, _ = env.step(np.zeros(env.action_dim))
            expected = obs["robot0_eef_pos"] - obs["object"][:3]
            np.testing.assert_allclose(obs["object"][7:10], expected, atol=1e-9)
    finally:
        env.close()


@pytest.mark.parametrize(
    "env_name, extra, kwargs",
    [
        ("SawyerPickPlaceCanTeleop", {}, {"gripper_visualization": False}),
        ("SawyerLift", {"env_version": "0.3.0"}, {}),
        ("Lift", {"env_version": "0.3.0"}, {}),
    ],
)
def test_robosuite_0x_recordings_are_refused_in_one_line(env_name, extra, kwargs):
    from demoset.format import EnvMeta

    with pytest.raises(SimulationError) as info:
        check_scene_rebuildable(EnvMeta(env_name, 1, kwargs, extra), "x.hdf5")
    message = info.value.one_line()
    assert "robosuite 0." in message and "extraction" in message and "conversion" in message
    assert "\n" not in message
    check_scene_rebuildable(EnvMeta("Lift", 1, {}, {"env_version": "1.4.1"}))
