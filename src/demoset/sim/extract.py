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
- The output appears complete under its name or not at all: demos go into
  `<output>.partial` and it is renamed when complete (sim/resume.py); an interrupted run
  keeps what it completed there for `resume=True`. Every input demo is in the output, or
  extraction fails naming the demo and the reason. `ray=` runs demos on a Ray cluster
  (sim/ray_backend.py) with the same result.
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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from demoset.errors import DemosetError, SimulationError
from demoset.format import DatasetWriter, open_dataset
from demoset.format import constants as C
from demoset.sim.extract_demo import (
    DemoResult,
    ExtractOptions,
    extract_one,
    make_extraction_env,
    source_env_meta,
)

ProgressFn = Callable[[int, int], None]


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
    resumed_demos: int = 0
    """Demos an interrupted run had completed (`demos` and `frames` count this run's)."""
    already_complete: bool = False
    """An interrupted run had already moved the finished file into place; nothing was done."""

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------- worker processes
_WORKER: dict[str, Any] = {}


def _init_worker(path: str, options: dict) -> None:
    df = open_dataset(path)
    opts = ExtractOptions(**{**options, "camera_names": tuple(options["camera_names"])})
    _WORKER.update(df=df, options=opts, env=make_extraction_env(source_env_meta(df), opts))


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
    return extract_one(_WORKER["env"], _WORKER["df"], demo, _WORKER["options"])


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
    workers: int | None = 1,
    n: int | None = None,
    filter_key: str | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    reuse_renderer: bool = True,
    resume: bool = False,
    ray: str | None = None,
    demo_progress: ProgressFn | None = None,
) -> ExtractReport:
    """Write a new dataset with observations extracted from `dataset`'s simulator states.

    The input may be a robomimic-layout file with env_args or a raw robosuite file. Actions,
    states, model_file, ep_meta, action_dict and filter keys are copied; obs, next_obs
    (unless `exclude_next_obs`), rewards and dones are computed (or copied with
    `copy_rewards` / `copy_dones`). Images are compressed with `compression` (gzip, lzf,
    lz4, blosc) when given. `progress(frames_done, frames_total)` is called after each demo.
    `reuse_renderer=False` builds a new rendering context for every demo (slower, same
    output; for checking that claim and for diagnosing rendering problems).

    Demos are written into `<output>.partial` (sim/resume.py) and the file is moved into
    place when complete. An interrupted run keeps what it completed there: `resume=True`
    continues it (the result equals an uninterrupted run); without it the partial output
    is refused. `ray` sends the demos to Ray tasks (sim/ray_backend.py): "auto", "local"
    (a local cluster of `workers` CPUs) or a cluster address; the output is the same.
    `demo_progress(demos_done, demos_total)` is called after each demo.
    """
    dataset = os.fspath(dataset)
    output = os.fspath(output)
    if os.path.abspath(dataset) == os.path.abspath(output):
        raise SimulationError("the output must be a new file, not the input", output)
    if done_mode not in (0, 1, 2):
        raise SimulationError(f"done_mode must be 0, 1 or 2, got {done_mode}")
    ray_cpus = workers  # None: every CPU of a local Ray cluster
    workers = 1 if workers is None else workers
    if workers < 1:
        raise SimulationError("workers must be at least 1")
    if ray is not None:
        from demoset.sim.ray_backend import import_ray

        import_ray()  # say how to install it before anything else happens
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
    from demoset.sim.resume import finished_earlier, open_partial, run_request

    request = run_request(dataset, demos, options, exclude_next_obs, compression, compression_level)
    if resume and not overwrite and finished_earlier(output, request):
        return ExtractReport(output, 0, 0, 0.0, 0, resumed_demos=len(demos), already_complete=True)
    partial = open_partial(
        output,
        request,
        resume=resume,
        overwrite=overwrite,
        image_compression=compression,
        compression_level=compression_level,
    )
    already = set(partial.done)
    todo = [d for d in demos if d not in already]
    workers = max(min(int(workers), len(todo)), 1)
    start = time.perf_counter()
    report = ExtractReport(output, 0, 0, 0.0, workers, resumed_demos=len(partial.done))
    if ray is not None and todo:
        from demoset.sim.ray_backend import results_on_ray

        results = results_on_ray(dataset, todo, options, ray, local_cpus=ray_cpus, report=report)
    elif not todo:
        results = iter(())
    elif workers == 1:
        results = _results_in_process(dataset, todo, options)
    else:
        results = _results_in_pool(dataset, todo, options, workers)
    failed: list[tuple[str, str]] = []
    done_frames = sum(lengths[d] for d in partial.done)
    with partial.removed_if_empty(), open_dataset(dataset) as df, partial.writer as writer:
        try:
            for demo, (status, result) in results:
                if status != "ok":
                    failed.append((demo, result))  # the Ray backend goes on with the others
                    continue
                if report.demos == 0:  # before the demo: a committed demo implies env_args
                    writer.set_env_meta(result.env_meta)
                _write_demo(writer, df, result, exclude_next_obs)
                report.demos += 1
                report.frames += lengths[demo]
                report.black_frames.extend(
                    (demo, key, idx) for key, idx in result.black_frames.items()
                )
                if demo_progress is not None:
                    demo_progress(len(partial.done) + report.demos, len(demos))
                if progress is not None:
                    progress(done_frames + report.frames, total_frames)
        finally:
            if hasattr(results, "close"):
                results.close()
        if failed:
            raise _failure(dataset, failed, len(partial.done) + report.demos)
        missing = [d for d in todo if d not in writer.demos]
        if missing:  # pragma: no cover - the loop above raises before this can happen
            raise SimulationError(f"demos missing from the output: {', '.join(missing)}", output)
        for key, members in filter_keys.items():
            kept = [d for d in members if d in lengths]
            if kept or not members:
                writer.set_filter_key(key, kept)
    partial.finish(overwrite=overwrite)
    report.seconds = time.perf_counter() - start
    return report


def _failure(dataset: str, failed: list[tuple[str, str]], kept: int) -> SimulationError:
    """One line naming the failed demos; what completed is kept for --resume."""
    hint = (
        f"the {kept} demos completed are kept: fix the cause and rerun with --resume"
        if kept
        else "no demo was completed"
    )
    if len(failed) == 1:
        demo, reason = failed[0]
        return SimulationError(f"extraction failed: {reason}; {hint}", dataset, f"/data/{demo}")
    listed = "; ".join(f"{demo}: {reason}" for demo, reason in failed[:5])
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    return SimulationError(
        f"extraction failed for {len(failed)} demos ({listed}{more}); {hint}", dataset
    )


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
