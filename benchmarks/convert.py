"""Throughput of each converter on a large input, in transitions per second.

    .venv/bin/python benchmarks/convert.py            # 1M-transition D4RL file and friends
    .venv/bin/python benchmarks/convert.py --scale 0.1

Inputs are written first (not timed) in a temporary folder:
- D4RL: 1M transitions, 17-dim observations, 6-dim actions, next_observations, infos/qpos
  and infos/qvel, 1000-step episodes (like the MuJoCo locomotion files); and the same
  stream cut into 50-step episodes, where the per-demo cost of HDF5 groups dominates.
  Cutting the stream into episodes is timed apart from writing, for a per-transition
  Python loop that appends rows (robomimic's script's approach) and for demoset's numpy
  cutting; the complete conversion is then dominated by creating the HDF5 demo groups.
- RoboTurk Pilot: 500 demos of 400 steps with 47-dim states and a 30 kB model XML each.
- MOMART: 12 demos of 250 steps, two 84x84 RGB and two 84x84 depth cameras (gzip),
  converted to a new file and in place.
- Minari: the 1M-transition robomimic file exported to Minari and imported back.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import h5py
import numpy as np

from demoset.convert.d4rl import convert_d4rl, derive_next_in_block, episode_bounds
from demoset.convert.minari import convert_minari, export_minari
from demoset.convert.momart import convert_momart
from demoset.convert.roboturk_pilot import convert_roboturk_pilot
from demoset.format import DatasetWriter


def write_d4rl(path: str, n: int, episode_len: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 17)).astype(np.float32)
    ends = np.zeros(n, dtype=bool)
    ends[episode_len - 1 :: episode_len] = True
    terminals = ends & (rng.random(n) < 0.3)
    with h5py.File(path, "w") as f:
        f["observations"] = obs
        f["next_observations"] = np.roll(obs, -1, axis=0)
        f["actions"] = rng.uniform(-1, 1, (n, 6)).astype(np.float32)
        f["rewards"] = rng.standard_normal(n).astype(np.float32)
        f["terminals"] = terminals
        f["timeouts"] = ends & ~terminals
        f["infos/qpos"] = rng.standard_normal((n, 9))
        f["infos/qvel"] = rng.standard_normal((n, 9))
        f["metadata/algorithm"] = np.bytes_("SAC")


def python_loop_baseline(path: str) -> int:
    """Episodes built one transition at a time (robomimic's approach), arrays only."""
    with h5py.File(path, "r") as f:
        obs, act = f["observations"][()], f["actions"][()]
        rew, term, tout = f["rewards"][()], f["terminals"][()], f["timeouts"][()]
    episodes = 0
    traj: dict[str, list] = {"obs": [], "next_obs": [], "actions": [], "rewards": [], "dones": []}
    for i in range(obs.shape[0] - 1):
        traj["obs"].append(obs[i])
        traj["actions"].append(act[i])
        traj["rewards"].append(rew[i])
        traj["next_obs"].append(obs[i + 1])
        traj["dones"].append(term[i])
        if term[i] or tout[i]:
            _ = {k: np.array(v) for k, v in traj.items()}
            episodes += 1
            traj = {k: [] for k in traj}
    return episodes


def numpy_cutting(path: str) -> int:
    """The same episodes and next observations cut by demoset's vectorised helpers."""
    with h5py.File(path, "r") as f:
        obs, act = f["observations"][()], f["actions"][()]
        rew, term, tout = f["rewards"][()], f["terminals"][()], f["timeouts"][()]
    starts, stops, _ = episode_bounds(term, tout)
    nxt = derive_next_in_block(obs, stops - 1)
    dones = term.astype(np.int64)
    episodes = [
        (obs[a:b], nxt[a:b], act[a:b], rew[a:b], dones[a:b])
        for a, b in zip(starts.tolist(), stops.tolist())
    ]
    return len(episodes)


def write_roboturk(folder: str, demos: int, length: int) -> None:
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(folder, "models"))
    xml = "<mujoco model='bins'>" + "<body name='b'/>" * 2000 + "</mujoco>"
    with h5py.File(os.path.join(folder, "demo.hdf5"), "w") as f:
        data = f.create_group("data")
        data.attrs["env"] = "SawyerPickPlaceCan"
        for k in range(1, demos + 1):
            grp = data.create_group(f"demo_{k}")
            grp["states"] = rng.standard_normal((length, 47))
            grp["joint_velocities"] = rng.uniform(-1.2, 1.2, (length, 7))
            grp["gripper_actuations"] = rng.uniform(-1, 1, (length, 1))
            grp.attrs["model_file"] = f"model_{k}.xml"
            with open(os.path.join(folder, "models", f"model_{k}.xml"), "w") as m:
                m.write(xml)


def write_momart(path: str, demos: int, length: int) -> None:
    rng = np.random.default_rng(0)
    env = {"env_name": "MomartTableSetup", "type": 3, "env_kwargs": {}}
    with DatasetWriter(path, env_meta=env, image_compression="gzip", compression_level=1) as w:
        for _ in range(demos):
            base = rng.integers(0, 256, (1, 84, 84, 3), dtype=np.uint8)
            obs = {
                "rgb": np.repeat(base, length, axis=0),
                "rgb_wrist": np.repeat(base, length, axis=0),
                "depth": np.full((length, 84, 84, 1), 1.5, dtype=np.float32),
                "depth_wrist": np.full((length, 84, 84, 1), 0.5, dtype=np.float32),
                "proprio": rng.standard_normal((length, 12)).astype(np.float32),
            }
            w.add_demo(
                actions=rng.uniform(-1, 1, (length, 10)), obs=obs, states=np.zeros((length, 0))
            )


def timed(label: str, transitions: int, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(
        f"{label:<58} {transitions:>9} transitions {seconds:7.2f} s {transitions / seconds:>12,.0f} transitions/s"
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the default sizes")
    parser.add_argument(
        "--dir", default=None, help="where to write inputs and outputs (default: a temp dir)"
    )
    args = parser.parse_args()
    n = int(1_000_000 * args.scale)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        os.environ["MINARI_DATASETS_PATH"] = os.path.join(tmp, "minari")
        d4rl_long = os.path.join(tmp, "d4rl_long.hdf5")
        d4rl_short = os.path.join(tmp, "d4rl_short.hdf5")
        write_d4rl(d4rl_long, n, 1000)
        n_short = n // 5
        write_d4rl(d4rl_short, n_short, 50)
        out = os.path.join(tmp, "d4rl.hdf5")

        print(f"inputs in {tmp}")
        t_loop = timed(
            "D4RL episode cutting, per-transition loop (no writing)",
            n,
            lambda: python_loop_baseline(d4rl_long),
        )
        t_np = timed(
            "D4RL episode cutting, demoset's numpy (no writing)",
            n,
            lambda: numpy_cutting(d4rl_long),
        )
        print(f"{'':<58} numpy cutting is {t_loop / t_np:.0f}x faster than the loop")
        timed(
            "D4RL 1000-step episodes -> robomimic (complete, written)",
            n,
            lambda: convert_d4rl(d4rl_long, out),
        )
        timed(
            "D4RL 1000-step episodes, infos as obs",
            n,
            lambda: convert_d4rl(
                d4rl_long, os.path.join(tmp, "d4rl_infos.hdf5"), infos_as_obs=True
            ),
        )
        timed(
            f"D4RL 50-step episodes ({n_short // 50} demos)",
            n_short,
            lambda: convert_d4rl(d4rl_short, os.path.join(tmp, "d4rl_short_out.hdf5")),
        )

        demos, length = max(1, int(500 * args.scale)), 400
        folder = os.path.join(tmp, "bins-Can")
        write_roboturk(folder, demos, length)
        timed(
            f"RoboTurk Pilot ({demos} demos x {length} steps)",
            demos * length,
            lambda: convert_roboturk_pilot(folder, os.path.join(tmp, "roboturk.hdf5")),
        )

        mm_demos, mm_len = max(1, int(12 * args.scale)), 250
        momart = os.path.join(tmp, "momart.hdf5")
        write_momart(momart, mm_demos, mm_len)
        size_mb = os.path.getsize(momart) / 1e6
        timed(
            f"MOMART to a new file ({size_mb:.0f} MB with images)",
            mm_demos * mm_len,
            lambda: convert_momart(momart, os.path.join(tmp, "momart_out.hdf5")),
        )
        timed(
            "MOMART in place (mask group only)",
            mm_demos * mm_len,
            lambda: convert_momart(momart, in_place=True),
        )

        timed(
            "robomimic -> Minari export (1000-step episodes)",
            n,
            lambda: export_minari(out, "bench/d4rl-v0"),
        )
        timed(
            "Minari -> robomimic import",
            n,
            lambda: convert_minari("bench/d4rl-v0", os.path.join(tmp, "from_minari.hdf5")),
        )


if __name__ == "__main__":
    main()
