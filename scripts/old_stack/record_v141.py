"""Record a few short Lift/Panda demos with robosuite 1.4.1's own collection tools.

Runs inside the old-stack virtualenv (scripts/old_stack/make_venv.sh), never in demoset's.
A scripted grasp-and-lift policy (with a little seeded noise so demos differ) drives the
OSC_POSE controller through robosuite's DataCollectionWrapper; robosuite's
gather_demonstrations_as_hdf5 then writes the raw demo.hdf5 exactly as its
collect_human_demonstrations script does (only successful demos are kept).

    python record_v141.py OUT_DIR [--demos 3] [--steps 48] [--seed 0]
"""

import argparse
import json
import os
import shutil
import tempfile

import numpy as np

# robosuite's collection script imports its keyboard device (pynput) at import time; with no
# display pynput needs its dummy backend.
os.environ.setdefault("PYNPUT_BACKEND", "dummy")

import robosuite as suite  # noqa: E402
from robosuite import load_controller_config  # noqa: E402
from robosuite.scripts.collect_human_demonstrations import gather_demonstrations_as_hdf5  # noqa: E402
from robosuite.wrappers import DataCollectionWrapper  # noqa: E402


def scripted_action(obs, t, rng):
    """Move above the cube, descend, close the gripper, lift (OSC_POSE deltas in [-1, 1])."""
    eef = obs["robot0_eef_pos"]
    cube = obs["cube_pos"]
    if t < 14:
        target, grip = cube + np.array([0.0, 0.0, 0.10]), -1.0
    elif t < 24:
        target, grip = cube + np.array([0.0, 0.0, -0.005]), -1.0
    elif t < 30:
        target, grip = eef, 1.0
    else:
        target, grip = eef + np.array([0.0, 0.0, 0.05]), 1.0
    delta = np.clip((target - eef) * 12.0, -1.0, 1.0) + rng.normal(0.0, 0.05, 3)
    rot = rng.normal(0.0, 0.02, 3)
    return np.concatenate([np.clip(delta, -1, 1), rot, [grip]])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--demos", type=int, default=3)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    controller = load_controller_config(default_controller="OSC_POSE")
    config = {"env_name": "Lift", "robots": "Panda", "controller_configs": controller}
    env = suite.make(
        **config,
        has_renderer=False,
        has_offscreen_renderer=False,
        ignore_done=True,
        use_camera_obs=False,
        reward_shaping=True,
        control_freq=20,
    )
    env_info = json.dumps(config)
    tmp = tempfile.mkdtemp(prefix="demoset-v141-")
    env = DataCollectionWrapper(env, tmp)
    rng = np.random.default_rng(args.seed)
    kept, tries = 0, 0
    while kept < args.demos and tries < 4 * args.demos:
        tries += 1
        np.random.seed(args.seed + tries)  # robosuite's placement sampler draws from np.random
        obs = env.reset()
        success = False
        for t in range(args.steps):
            obs, _, _, _ = env.step(scripted_action(obs, t, rng))
            success = success or env._check_success()
        kept += int(success)
        print(f"episode {tries}: {'success' if success else 'failure'}")
    env.close()
    os.makedirs(args.out_dir, exist_ok=True)
    gather_demonstrations_as_hdf5(tmp, args.out_dir, env_info)
    shutil.rmtree(tmp)
    print(f"kept {kept} demos of {args.steps} steps in {args.out_dir}/demo.hdf5")


if __name__ == "__main__":
    main()
