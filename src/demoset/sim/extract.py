"""Observations from stored simulator states (robomimic's dataset_states_to_obs, fast and safe).

For every demo the simulator is reset to the demo's model, then to each stored state, and
the observation is read (low-dim values, camera frames, depth). The transition reward and
done flag of step t are those of state t+1, as in robomimic. The last step's next
observation does not exist in the file, so the last action is applied from the last state
(after restoring the gripper command ramp from the earlier actions, so the step matches
the recording) and the resulting state is observed.

Speed and safety:
- `workers=N` runs demos in N processes (each with its own simulator). Each worker sends a
  demo's arrays back to this process, which writes every demo exactly once, in input order,
  into one output file; the output is the same for any number of workers.
- The output is written atomically: it appears complete under its name or not at all.
  Every input demo is in it, or extraction fails naming the demo and the reason.
- Each frame is rendered once: next_obs[t] is obs[t+1] (the same state), so it is derived
  rather than rendered again; the resets around loading a demo's model and the final step
  render nothing (their observations would be thrown away).
- A worker keeps its simulator's rendering context from demo to demo when the demos' models
  draw alike (robosuite randomises object sizes, not meshes or textures): making one costs
  about a second, as much as rendering several frames. The output is byte-identical to a
  fresh context per demo (`reuse_renderer=False`; tested).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from demoset.errors import DemosetError, SimulationError
from demoset.format import DatasetWriter, EnvMeta, open_dataset
from demoset.format import constants as C

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ExtractOptions:
    """What to extract; the same names as robomimic's dataset_states_to_obs flags."""

    camera_names: tuple[str, ...] = ()
    camera_height: int = 84
    camera_width: int = 84
    depth: bool = False
    done_mode: int = 0
    shaped: bool = False
    copy_rewards: bool = False
    copy_dones: bool = False
    reuse_renderer: bool = True
    """Keep the rendering context between demos whose scenes look alike (same output, faster)."""


@dataclass
class DemoResult:
    """One demo's extracted arrays, sent from a worker to the writing process."""

    demo: str
    obs: dict[str, np.ndarray]
    final_obs: dict[str, np.ndarray]
    rewards: np.ndarray
    dones: np.ndarray
    black_frames: dict[str, list[int]]
    env_meta: dict
    seconds: float


@dataclass
class ExtractReport:
    """What an extraction run wrote."""

    output: str
    demos: int
    frames: int
    seconds: float
    workers: int
    black_frames: list[tuple[str, str, list[int]]] = field(default_factory=list)
    """(demo, obs key, step indices) for every camera frame that is entirely black."""

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------- reading input
def source_env_meta(df) -> EnvMeta:
    """The env_args of a dataset, or of a raw robosuite file (attrs env / env_info)."""
    meta = df.env_meta
    if meta is not None:
        return meta
    attrs = df.data_attrs()
    if "env" in attrs and "env_info" in attrs:
        from demoset.format import env_meta_from_raw_attrs

        return env_meta_from_raw_attrs(attrs, df.path)
    raise SimulationError(
        "the file has no env_args (and no robosuite env / env_info attributes)", df.path, "/data"
    )


def done_flags(successes: np.ndarray, done_mode: int) -> np.ndarray:
    """dones from per-step success of the next state: mode 0 success, 1 last step, 2 either."""
    n = len(successes)
    dones = np.zeros(n, dtype=np.int64)
    if done_mode in (1, 2) and n:
        dones[-1] = 1
    if done_mode in (0, 2):
        dones |= successes.astype(np.int64)
    return dones


def black_frame_indices(frames: np.ndarray) -> list[int]:
    """Indices of frames whose every pixel is zero."""
    flat = frames.reshape(frames.shape[0], -1)
    return np.flatnonzero(flat.max(axis=1) == 0).tolist()


def _stack(observations: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([o[key] for o in observations]) for key in observations[0]}


# ---------------------------------------------------------------------------- one demo
def extract_demo(env, df, demo: str, options: ExtractOptions) -> DemoResult:
    """Replay one demo's states through `env` and return its observations, rewards, dones."""
    start = time.perf_counter()
    states = df.read(demo, C.STATES)
    actions = df.read(demo, C.ACTIONS)
    if states.ndim != 2 or len(states) != len(actions) or len(states) == 0:
        raise SimulationError(f"states {states.shape} and actions {actions.shape} do not match")
    attrs = df.demo_attrs(demo)
    initial: dict[str, Any] = {"states": states[0]}
    if attrs.get(C.ATTR_MODEL_FILE):
        initial["model"] = attrs[C.ATTR_MODEL_FILE]
    if attrs.get(C.ATTR_EP_META):
        initial["ep_meta"] = attrs[C.ATTR_EP_META]
    n = len(states)
    observations = [env.reset_to(initial)]
    rewards = np.zeros(n, dtype=np.float64)
    successes = np.zeros(n, dtype=bool)
    for t in range(1, n):
        observations.append(env.reset_to({"states": states[t]}))
        rewards[t - 1] = env.get_reward()
        successes[t - 1] = env.is_success()
    if hasattr(env, "restore_action_history"):
        env.restore_action_history(actions[: n - 1])
    env.advance(actions[n - 1])
    # Observe the reached state the way every other state here is observed (set, forward,
    # read): robosuite's step returns observables sampled at an earlier substep and
    # positions from before the last integration. (So the step itself renders nothing.)
    final_obs = env.reset_to({"states": env.get_state()["states"]})
    rewards[n - 1] = env.get_reward()
    successes[n - 1] = env.is_success()

    if options.copy_rewards:
        if not df.has(demo, C.REWARDS):
            raise SimulationError("copy_rewards: the demo has no rewards to copy")
        rewards = df.read(demo, C.REWARDS)
    dones = done_flags(successes, options.done_mode)
    if options.copy_dones:
        if not df.has(demo, C.DONES):
            raise SimulationError("copy_dones: the demo has no dones to copy")
        dones = df.read(demo, C.DONES)

    obs = _stack(observations)
    black = {k: black_frame_indices(v) for k, v in obs.items() if k.endswith("_image")}
    black = {k: v for k, v in black.items() if v}
    return DemoResult(
        demo=demo,
        obs=obs,
        final_obs=final_obs,
        rewards=rewards,
        dones=dones,
        black_frames=black,
        env_meta=env.env_meta.to_dict(),
        seconds=time.perf_counter() - start,
    )


def _make_env(env_meta: EnvMeta, options: ExtractOptions):
    from demoset.sim.factory import make_env

    robosuite_only = {}
    if env_meta.env_type == C.ENV_TYPE_ROBOSUITE:
        robosuite_only = {
            "fast_reset": True,
            "reuse_renderer": options.reuse_renderer,
            "reward_shaping": options.shaped,
        }
    elif options.shaped:
        raise SimulationError("shaped rewards are a robosuite option")
    return make_env(
        env_meta,
        camera_names=options.camera_names,
        camera_height=options.camera_height,
        camera_width=options.camera_width,
        use_depth=options.depth,
        **robosuite_only,
    )


# ---------------------------------------------------------------------------- worker processes
_WORKER: dict[str, Any] = {}


def _init_worker(path: str, options: dict) -> None:
    df = open_dataset(path)
    opts = ExtractOptions(**{**options, "camera_names": tuple(options["camera_names"])})
    _WORKER.update(df=df, options=opts, env=_make_env(source_env_meta(df), opts))


def _init_pool_worker(path: str, options: dict) -> None:
    """Pool initializer: a failure is kept and reported with the first demo, not a dead pool.

    Each worker renders with one llvmpipe thread (unless LP_NUM_THREADS is set): N workers
    then use N cores instead of N x cores threads competing, which measured faster.
    """
    os.environ.setdefault("LP_NUM_THREADS", "1")
    try:
        _init_worker(path, options)
    except DemosetError as exc:
        _WORKER["init_error"] = exc.message
    except Exception as exc:  # noqa: BLE001 - reported per demo instead
        _WORKER["init_error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")


def _work(demo: str) -> tuple[str, Any]:
    """Extract one demo in a worker: ("ok", DemoResult) or ("error", one-line reason)."""
    if "init_error" in _WORKER:
        return "error", f"the worker could not start the simulator: {_WORKER['init_error']}"
    try:
        return "ok", extract_demo(_WORKER["env"], _WORKER["df"], demo, _WORKER["options"])
    except DemosetError as exc:
        return "error", exc.message
    except Exception as exc:  # noqa: BLE001 - any failure must name the demo, not kill the run
        last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" (at {os.path.basename(last.filename)}:{last.lineno})" if last else ""
        return "error", f"{type(exc).__name__}: {exc}{where}".replace("\n", " ")


def _results_in_process(path: str, demos: Sequence[str], options: ExtractOptions):
    _init_worker(path, asdict(options))
    try:
        for demo in demos:
            yield demo, _work(demo)
    finally:
        _close_worker()


def _close_worker() -> None:
    env = _WORKER.pop("env", None)
    if env is not None:
        env.close()
    df = _WORKER.pop("df", None)
    if df is not None:
        df.close()


def _results_in_pool(path: str, demos: Sequence[str], options: ExtractOptions, workers: int):
    """Yield (demo, result) in input order while up to 2 * workers demos are in flight."""
    context = multiprocessing.get_context(
        "spawn"
    )  # fresh processes: no GL context or HDF5 handle shared
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_pool_worker,
        initargs=(path, asdict(options)),
    ) as pool:
        pending: deque = deque()
        queue = iter(demos)
        for demo in queue:
            pending.append((demo, pool.submit(_work, demo)))
            if len(pending) >= 2 * workers:
                break
        try:
            while pending:
                demo, future = pending.popleft()
                try:
                    result = future.result()
                except concurrent.futures.process.BrokenProcessPool:
                    result = (
                        "error",
                        "a worker process died (crashed or was killed) while extracting it",
                    )
                yield demo, result
                if result[0] != "ok":
                    return
                nxt = next(queue, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(_work, nxt)))
        finally:
            for _, future in pending:
                future.cancel()


# ---------------------------------------------------------------------------- the whole file
def extract_obs(
    dataset: str | os.PathLike,
    output: str | os.PathLike,
    camera_names: Sequence[str] = (),
    camera_height: int = 84,
    camera_width: int = 84,
    depth: bool = False,
    done_mode: int = 0,
    shaped: bool = False,
    copy_rewards: bool = False,
    copy_dones: bool = False,
    exclude_next_obs: bool = False,
    compression: str | None = None,
    compression_level: int | None = None,
    workers: int = 1,
    n: int | None = None,
    filter_key: str | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    reuse_renderer: bool = True,
) -> ExtractReport:
    """Write a new dataset with observations extracted from `dataset`'s simulator states.

    The input may be a robomimic-layout file with env_args or a raw robosuite file. Actions,
    states, model_file, ep_meta, action_dict and filter keys are copied; obs, next_obs
    (unless `exclude_next_obs`), rewards and dones are computed (or copied with
    `copy_rewards` / `copy_dones`). Images are compressed with `compression` (gzip, lzf,
    lz4, blosc) when given. `progress(frames_done, frames_total)` is called after each demo.
    `reuse_renderer=False` builds a new rendering context for every demo (slower, same
    output; for checking that claim and for diagnosing rendering problems).
    """
    dataset = os.fspath(dataset)
    output = os.fspath(output)
    if os.path.abspath(dataset) == os.path.abspath(output):
        raise SimulationError("the output must be a new file, not the input", output)
    if done_mode not in (0, 1, 2):
        raise SimulationError(f"done_mode must be 0, 1 or 2, got {done_mode}")
    if workers < 1:
        raise SimulationError("workers must be at least 1")
    options = ExtractOptions(
        camera_names=tuple(camera_names),
        camera_height=int(camera_height),
        camera_width=int(camera_width),
        depth=bool(depth),
        done_mode=int(done_mode),
        shaped=bool(shaped),
        copy_rewards=bool(copy_rewards),
        copy_dones=bool(copy_dones),
        reuse_renderer=bool(reuse_renderer),
    )
    if options.depth and not options.camera_names:
        raise SimulationError("depth needs camera names")
    with open_dataset(dataset) as df:
        from demoset.sim.legacy_check import check_scene_rebuildable

        # Fail early, before any process starts: no env_args, or a scene robosuite 1.x
        # cannot rebuild (robosuite 0.x recordings).
        check_scene_rebuildable(source_env_meta(df), dataset)
        demos = df.demos_for(filter_key)
        if n is not None:
            demos = demos[: max(int(n), 0)]
        if not demos:
            raise SimulationError("no demos to extract", dataset, "/data")
        for demo in demos:
            if not df.has(demo, C.STATES):
                raise SimulationError(
                    "demo has no states to extract observations from",
                    dataset,
                    f"/data/{demo}/states",
                )
        lengths = dict(zip(demos, df.lengths(demos).tolist()))
        filter_keys = {key: df.filter_key_demos(key) for key in df.filter_keys}
    total_frames = int(sum(lengths.values()))
    workers = min(int(workers), len(demos))
    start = time.perf_counter()
    report = ExtractReport(output, 0, 0, 0.0, workers)
    results = (
        _results_in_process(dataset, demos, options)
        if workers == 1
        else _results_in_pool(dataset, demos, options, workers)
    )
    with (
        open_dataset(dataset) as df,
        DatasetWriter(
            output,
            mode="w",
            overwrite=overwrite,
            atomic=True,
            image_compression=compression,
            compression_level=compression_level,
        ) as writer,
    ):
        try:
            for demo, (status, result) in results:
                if status != "ok":
                    raise SimulationError(f"extraction failed: {result}", dataset, f"/data/{demo}")
                _write_demo(writer, df, result, exclude_next_obs)
                if report.demos == 0:
                    writer.set_env_meta(result.env_meta)
                report.demos += 1
                report.frames += lengths[demo]
                report.black_frames.extend(
                    (demo, key, idx) for key, idx in result.black_frames.items()
                )
                if progress is not None:
                    progress(report.frames, total_frames)
        finally:
            results.close()
        missing = [d for d in demos if d not in writer.demos]
        if missing:  # pragma: no cover - the loop above raises before this can happen
            raise SimulationError(f"demos missing from the output: {', '.join(missing)}", output)
        for key, members in filter_keys.items():
            kept = [d for d in members if d in lengths]
            if kept or not members:
                writer.set_filter_key(key, kept)
    report.seconds = time.perf_counter() - start
    return report


def _write_demo(writer: DatasetWriter, df, result: DemoResult, exclude_next_obs: bool) -> None:
    demo = result.demo
    attrs = df.demo_attrs(demo)
    action_dict = None
    if df.action_dict_keys(demo):
        action_dict = {
            key: df.read(demo, f"{C.ACTION_DICT}/{key}") for key in df.action_dict_keys(demo)
        }
    writer.add_demo(
        actions=df.read(demo, C.ACTIONS),
        obs=result.obs,
        rewards=result.rewards,
        dones=result.dones,
        states=df.read(demo, C.STATES),
        model_file=attrs.get(C.ATTR_MODEL_FILE) or None,
        ep_meta=attrs.get(C.ATTR_EP_META) or None,
        action_dict=action_dict,
        derive_next_obs=not exclude_next_obs,
        final_obs=result.final_obs,
        name=demo,
    )
