"""Scripted demonstration collection, recorded the way robosuite's teleoperation tools record.

The environment is wrapped in robosuite's own `DataCollectionWrapper`, which writes one
folder per episode (model.xml, ep_meta.json, state_*.npz with flattened states and
actions) into a private temporary directory. The successful episodes are then gathered
into one raw HDF5 file laid out exactly as robosuite's `gather_demonstrations_as_hdf5`
lays it out:

    data                attrs: date, time, repository_version, env, env_info (JSON)
      demo_1            attrs: model_file (XML)
        states  (N, D)  the state each action was applied in (the final state is dropped)
        actions (N, A)

Demo numbering starts at 1, as robosuite's does. `demoset convert robosuite` turns such
a file into the robomimic layout.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from glob import glob

import h5py
import numpy as np

from demoset.errors import SimulationError, WriteError
from demoset.fsutil import atomic_output

ProgressFn = Callable[[int, int], None]


@dataclass
class CollectReport:
    """What a collection run produced: how many attempts it took and what was kept."""

    path: str
    env_name: str
    attempts: int
    kept: int
    lengths: list[int]
    seconds: float
    steps: int
    failures: list[int] = field(default_factory=list)
    observations: list[dict[str, np.ndarray]] = field(default_factory=list)
    """With record_obs: per kept demo, the observations the simulator gave while collecting
    (obs[t] is the observation of states[t]; robomimic key names)."""
    final_observations: list[dict[str, np.ndarray]] = field(default_factory=list)
    """With record_obs: per kept demo, the observation after its last action."""

    @property
    def success_rate(self) -> float:
        return self.kept / self.attempts if self.attempts else 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def teleop_env_info(env_name: str, robots: list[str], controller: str | None = None) -> dict:
    """The `env_info` robosuite's collection script stores: env_name, robots, controller_configs."""
    from demoset.sim.robosuite_env import import_robosuite

    import_robosuite()
    from robosuite.controllers import load_composite_controller_config

    try:
        controller_config = load_composite_controller_config(controller=controller, robot=robots[0])
    except Exception as exc:  # noqa: BLE001
        raise SimulationError(
            f"cannot load controller config {controller!r} for {robots[0]}: {exc}"
        ) from None
    config = {"env_name": env_name, "robots": list(robots), "controller_configs": controller_config}
    if "TwoArm" in env_name:
        config["env_configuration"] = "default"
    return config


def _state_file_key(path: str) -> float:
    """state_<seconds>_<fraction>.npz sorts by the time it was written."""
    stem = os.path.basename(path)[len("state_") : -len(".npz")]
    seconds, _, fraction = stem.partition("_")
    try:
        return float(f"{seconds}.{fraction or 0}")
    except ValueError:
        return float("inf")


def read_episode_folder(ep_directory: str) -> tuple[np.ndarray, np.ndarray, bool, str, str]:
    """(states, actions, successful, env_name, model_xml) of one DataCollectionWrapper folder.

    As robosuite's gather step does, the last state is dropped: the wrapper records the
    state after each action, so there is one more state than actions. The npz files hold
    pickled action dicts; they are read only from the private folder this module created
    moments before, never from user input.
    """
    states: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    success = False
    env_name = ""
    for state_file in sorted(glob(os.path.join(ep_directory, "state_*.npz")), key=_state_file_key):
        with np.load(state_file, allow_pickle=True) as dic:
            env_name = str(dic["env"])
            states.extend(dic["states"])
            actions.extend(np.asarray(info["actions"]) for info in dic["action_infos"])
            success = success or bool(dic["successful"])
    with open(os.path.join(ep_directory, "model.xml")) as f:
        xml = f.read()
    if not states:
        return np.zeros((0, 0)), np.zeros((0, 0)), False, env_name, xml
    del states[-1]
    if len(states) != len(actions):
        raise SimulationError(f"{ep_directory}: {len(states)} states for {len(actions)} actions")
    return np.array(states), np.array(actions), success, env_name, xml


def write_raw_hdf5(
    path: str, episodes: list[tuple[np.ndarray, np.ndarray, str]], env_name: str, env_info: dict
) -> None:
    """Write episodes (states, actions, model_xml) as robosuite's raw demo.hdf5, atomically."""
    import robosuite

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise WriteError(f"directory {directory} does not exist", path)
    try:
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            grp = f.create_group("data")
            for i, (states, actions, xml) in enumerate(episodes, start=1):
                ep = grp.create_group(f"demo_{i}")
                ep.attrs["model_file"] = xml
                ep.create_dataset("states", data=states)
                ep.create_dataset("actions", data=actions)
            now = datetime.datetime.now()
            grp.attrs["date"] = f"{now.month}-{now.day}-{now.year}"
            grp.attrs["time"] = f"{now.hour}:{now.minute}:{now.second}"
            grp.attrs["repository_version"] = robosuite.__version__
            grp.attrs["env"] = env_name
            grp.attrs["env_info"] = json.dumps(env_info)
    except OSError as exc:
        raise WriteError(f"cannot write raw file ({exc})", path) from None


def collect_demos(
    env_name: str,
    n_demos: int,
    out_path: str | os.PathLike,
    robot: str = "Panda",
    controller: str | None = None,
    seed: int = 0,
    noise: float = 0.05,
    max_steps: int = 400,
    success_hold: int = 10,
    max_attempts: int | None = None,
    overwrite: bool = False,
    record_obs: bool = False,
    progress: ProgressFn | None = None,
) -> CollectReport:
    """Collect `n_demos` successful scripted demos of a robosuite task into a raw HDF5 file.

    Each episode runs until the task has been solved for `success_hold` further steps (as
    robosuite's teleoperation script does), the demonstrator gives up, or `max_steps`.
    Failed episodes are counted and dropped. Stops after `max_attempts` (default
    2 * n_demos + 10), keeping the demos that succeeded; raises SimulationError (and writes
    nothing) when none did.
    """
    from demoset.sim.robosuite_env import RobosuiteEnv, import_robosuite
    from demoset.sim.scripted import POLICIES, scripted_policy_for

    out_path = os.fspath(out_path)
    if n_demos < 1:
        raise SimulationError("n_demos must be at least 1")
    if os.path.exists(out_path) and not overwrite:
        raise WriteError("file exists; pass overwrite=True (--overwrite) to replace it", out_path)
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        raise WriteError("the output directory does not exist", out_path)
    if env_name not in POLICIES:
        known = ", ".join(sorted(POLICIES))
        raise SimulationError(f"no scripted demonstrator for {env_name!r} (available: {known})")
    max_attempts = max_attempts or (2 * n_demos + 10)
    import_robosuite()
    from robosuite.wrappers import DataCollectionWrapper

    env_info = teleop_env_info(env_name, [robot], controller)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    tmp_root = tempfile.mkdtemp(prefix="demoset-collect-")
    kept: list[tuple[np.ndarray, np.ndarray, str]] = []
    report = CollectReport(out_path, env_name, 0, 0, [], 0.0, 0)
    quiet = io.StringIO()  # DataCollectionWrapper prints a line per episode
    env = None
    try:
        env = RobosuiteEnv(
            env_name,
            robots=env_info["robots"],
            controller_configs=env_info["controller_configs"],
            reward_shaping=True,
            control_freq=20,
            seed=seed,
            **(
                {"env_configuration": env_info["env_configuration"]}
                if "env_configuration" in env_info
                else {}
            ),
        )
        sim_env = env.env
        with contextlib.redirect_stdout(quiet):
            env.env = DataCollectionWrapper(sim_env, os.path.join(tmp_root, "episodes"))
        episodes: list[tuple[str, bool, list[dict[str, np.ndarray]] | None]] = []
        while report.kept < n_demos and report.attempts < max_attempts:
            report.attempts += 1
            with contextlib.redirect_stdout(quiet):
                obs = env.reset()
            policy = scripted_policy_for(env_name, sim_env, rng, noise)
            policy.reset()
            observed = [obs] if record_obs else None
            hold = -1
            success = False
            for _ in range(max_steps):
                with contextlib.redirect_stdout(quiet):
                    obs, _r, _d, _info = env.step(policy.action())
                report.steps += 1
                if observed is not None:
                    observed.append(obs)
                if env.is_success():
                    hold = success_hold if hold < 0 else hold - 1
                    if hold <= 0:
                        success = True
                        break
                else:
                    hold = -1
                if policy.done and hold < 0:
                    break
            episodes.append((env.env.ep_directory, success, observed))
            if success:
                report.kept += 1
            else:
                report.failures.append(report.attempts)
            if progress is not None:
                progress(report.kept, n_demos)
        with contextlib.redirect_stdout(quiet):
            env.close()  # flushes the last episode
        env = None
        env_name_recorded = env_name
        for ep_directory, success, observed in episodes:
            if not success or ep_directory is None:
                continue
            states, actions, successful, recorded_env, xml = read_episode_folder(ep_directory)
            if not successful or len(actions) == 0:
                continue
            kept.append((states, actions, xml))
            report.lengths.append(len(actions))
            if observed is not None:
                stacked = {
                    k: np.stack([o[k] for o in observed[: len(actions)]]) for k in observed[0]
                }
                report.observations.append(stacked)
                report.final_observations.append(observed[len(actions)])
            env_name_recorded = recorded_env or env_name
        if not kept:
            raise SimulationError(
                f"no successful {env_name} demos in {report.attempts} attempts; nothing written",
                out_path,
            )
        write_raw_hdf5(out_path, kept, env_name_recorded, env_info)
    finally:
        if env is not None:  # interrupted: free the simulator; the episodes are discarded
            with contextlib.redirect_stdout(quiet):
                env.close()
        shutil.rmtree(tmp_root, ignore_errors=True)
    report.kept = len(kept)
    report.seconds = time.perf_counter() - start
    return report
