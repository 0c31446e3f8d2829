"""Evaluate a policy by running it in the dataset's environment.

Everything comes from the checkpoint: the network, its normalisation statistics, the
observation keys (and camera sizes for image policies) and the environment's `env_args`.
Episodes end on task success (unless told otherwise) or at the horizon. A video of the
episodes, one frame every `video_skip` steps, can be written with imageio-ffmpeg; it is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from demoset.errors import SimulationError
from demoset.fsutil import temp_path_beside
from demoset.train.algos import BCAlgo
from demoset.train.checkpoint import algo_from_checkpoint, load_checkpoint


@dataclass
class EpisodeResult:
    success: bool
    total_return: float
    length: int


@dataclass
class RolloutResult:
    episodes: list[EpisodeResult] = field(default_factory=list)
    video_path: str | None = None
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.success for e in self.episodes])) if self.episodes else 0.0

    @property
    def mean_return(self) -> float:
        return float(np.mean([e.total_return for e in self.episodes])) if self.episodes else 0.0

    @property
    def mean_length(self) -> float:
        return float(np.mean([e.length for e in self.episodes])) if self.episodes else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "episodes": len(self.episodes),
            "success_rate": self.success_rate,
            "mean_return": self.mean_return,
            "mean_length": self.mean_length,
            "returns": [e.total_return for e in self.episodes],
            "successes": [bool(e.success) for e in self.episodes],
            "video": self.video_path,
            "seconds": self.seconds,
        }


def env_for_policy(
    algo: BCAlgo,
    env_meta: dict | None,
    render: bool = False,
    seed: int | None = None,
):
    """The environment a policy acts in: its camera observations at the trained size."""
    from demoset.format import ENV_TYPE_ROBOSUITE
    from demoset.sim import as_env_meta, cameras_from_obs_keys, make_env

    if not env_meta:
        raise SimulationError(
            "the checkpoint carries no environment metadata (env_args) to roll out in"
        )
    if algo.shape_meta["goal_shapes"]:
        raise SimulationError(
            "goal-conditioned policies cannot be rolled out (the environment gives no goals)"
        )
    meta = as_env_meta(env_meta)
    obs_shapes = algo.shape_meta["obs_shapes"]
    camera_keys = [
        k
        for k, m in algo.shape_meta["modalities"].items()
        if m in ("rgb", "depth") and k in obs_shapes
    ]
    cameras, depth = cameras_from_obs_keys(camera_keys)
    height = width = 84
    if camera_keys:
        height, width = obs_shapes[camera_keys[0]][0], obs_shapes[camera_keys[0]][1]
    overrides: dict[str, Any] = {}
    if seed is not None and meta.env_type == ENV_TYPE_ROBOSUITE:
        overrides["seed"] = int(seed)
    return make_env(
        meta,
        render_offscreen=render,
        camera_names=cameras,
        camera_height=height,
        camera_width=width,
        use_depth=depth,
        **overrides,
    )


class _VideoWriter:
    """MP4 frames via imageio-ffmpeg, written to a temporary file and renamed on close."""

    def __init__(self, path: str, fps: int):
        import imageio

        self.path = os.path.abspath(path)
        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        # imageio picks the format from the extension, so the temporary name keeps it
        self.tmp = temp_path_beside(
            self.path, suffix=".partial" + (os.path.splitext(path)[1] or ".mp4")
        )
        try:
            self.writer = imageio.get_writer(self.tmp, fps=fps, macro_block_size=1)
        except BaseException:
            os.unlink(self.tmp)
            raise

    def append(self, frame: np.ndarray) -> None:
        self.writer.append_data(frame)

    def close(self) -> str:
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)


def run_rollouts(
    algo: BCAlgo,
    env_meta: dict | None,
    episodes: int,
    horizon: int = 400,
    terminate_on_success: bool = True,
    video_path: str | None = None,
    video_skip: int = 5,
    video_cameras: Sequence[str] = ("agentview",),
    video_size: int = 256,
    fps: int = 20,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    env=None,
) -> RolloutResult:
    """Run `episodes` episodes of the policy and collect success, return and length.

    `seed` makes the initial states (and GMM sampling) reproducible. `env` reuses an
    existing environment (it must provide the policy's observation keys).
    """
    if episodes < 1:
        raise SimulationError("the number of episodes must be at least 1")
    if seed is not None:
        np.random.seed(seed)
        torch.manual_seed(seed)
    own_env = env is None
    if own_env:
        env = env_for_policy(algo, env_meta, render=video_path is not None, seed=seed)
    video = _VideoWriter(video_path, fps) if video_path else None
    result = RolloutResult()
    start = time.perf_counter()
    try:
        missing = None
        for ep in range(episodes):
            obs = env.reset()
            if missing is None:
                missing = [k for k in algo.shape_meta["obs_shapes"] if k not in obs]
                if missing:
                    raise SimulationError(
                        f"the environment gives no observation {missing[0]!r} that the policy needs"
                    )
            algo.reset()
            total = 0.0
            success = False
            steps = 0
            for t in range(horizon):
                action = algo.get_action(obs)
                obs, reward, done, _info = env.step(action)
                total += float(reward)
                steps = t + 1
                success = bool(env.is_success())
                if video is not None and t % video_skip == 0:
                    frames = [env.render(cam, video_size, video_size) for cam in video_cameras]
                    video.append(np.concatenate(frames, axis=1))
                if done or (success and terminate_on_success):
                    break
            result.episodes.append(EpisodeResult(success=success, total_return=total, length=steps))
            if progress is not None:
                progress(ep + 1, episodes)
    except BaseException:
        if video is not None:
            video.abort()
        raise
    finally:
        if own_env:
            env.close()
    if video is not None:
        result.video_path = video.close()
    result.seconds = time.perf_counter() - start
    return result


def evaluate_checkpoint(
    checkpoint: str,
    episodes: int,
    horizon: int | None = None,
    video_path: str | None = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> RolloutResult:
    """Load a checkpoint and roll it out; horizon defaults to the config's rollout horizon."""
    ckpt = load_checkpoint(checkpoint)
    algo = algo_from_checkpoint(ckpt, device=device, path=checkpoint)
    rollout_cfg = algo.config["experiment"]["rollout"]
    params: dict[str, Any] = {
        "terminate_on_success": rollout_cfg["terminate_on_success"],
        "video_skip": algo.config["experiment"]["video_skip"],
    }
    params.update(kwargs)
    return run_rollouts(
        algo,
        ckpt.get("env_meta"),
        episodes,
        horizon=horizon or rollout_cfg["horizon"],
        video_path=video_path,
        seed=seed,
        progress=progress,
        **params,
    )


def rollout_stats_for_training(
    algo: BCAlgo, env_meta: dict | None, config, epoch: int, run_dir: str
) -> dict[str, Any]:
    """Rollouts during training (experiment.rollout), with a video when render_video is set.

    The global RNG state is put back afterwards, so rollouts do not change what training
    does next.
    """
    from demoset.train.checkpoint import rng_state, set_rng_state

    saved = rng_state()
    exp = config["experiment"]
    r = exp["rollout"]
    video = os.path.join(run_dir, "videos", f"epoch_{epoch}.mp4") if exp["render_video"] else None
    try:
        res = run_rollouts(
            algo,
            env_meta,
            r["n"],
            horizon=r["horizon"],
            terminate_on_success=r["terminate_on_success"],
            video_path=video,
            video_skip=exp["video_skip"],
            seed=config["train"]["seed"] + epoch,
        )
    finally:
        set_rng_state(saved)
    return {
        "success_rate": res.success_rate,
        "mean_return": res.mean_return,
        "mean_length": res.mean_length,
        "seconds": res.seconds,
        "video": res.video_path,
    }
