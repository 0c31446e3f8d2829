"""Extraction on a Ray cluster: each demo is a Ray task, its arrays come back to one writer.

The machine that runs `extract-obs --ray ADDRESS` reads the input file, sends each demo's
states, actions and attributes to a Ray task (so the cluster's nodes need no access to the
file), and writes the results into the one output file in demo order, as the local
backends do; the output is the same. Nodes need demoset and its simulator (demoset[sim])
installed; a task keeps its simulator and rendering context for the next demo it gets,
like a local worker process.

Failures: a task whose worker process dies (killed, crashed, out of memory) is run again
once by Ray. A demo that still fails, or whose extraction raises, is reported by name and
the others go on; the run then ends with an error and what completed stays in the partial
output for --resume. A worker that cannot start the simulator at all (robosuite missing on
the cluster) stops the run at the first such answer: every other demo would fail the same
way.

Not reachable: an address nobody listens on would keep Ray's own client retrying for
minutes, so the address is first probed with a plain TCP connection and a short timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from demoset.errors import DemosetError, SimulationError
from demoset.format import constants as C
from demoset.format import env_meta_from_dict, open_dataset
from demoset.sim.extract_demo import (
    ExtractOptions,
    extract_one,
    make_extraction_env,
    source_env_meta,
)

INSTALL_HINT = "pip install 'demoset[ray]'"
CONNECT_TIMEOUT = float(os.environ.get("DEMOSET_RAY_CONNECT_TIMEOUT", "5"))
RETRIES = 1
"""Extra attempts for a demo whose worker process died (so it is tried twice in all)."""


def import_ray():
    """The ray module, or a SimulationError saying how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise SimulationError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# ---------------------------------------------------------------------------- connecting
def _split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of "host:port" or "ray://host:port"; None when it is not of that form."""
    bare = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _auto_address() -> str | None:
    """The address `ray.init("auto")` would use: $RAY_ADDRESS, else the last `ray start`."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    with contextlib.suppress(OSError):
        with open(os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")) as f:
            return f.read().strip() or None
    return None


def probe(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise SimulationError unless something accepts TCP connections at `address`."""
    where = _split_address(address)
    if where is None:
        raise SimulationError(
            f"--ray {address!r}: give auto, local, HOST:PORT or ray://HOST:PORT of a Ray cluster"
        )
    try:
        with socket.create_connection(where, timeout=timeout):
            pass
    except TimeoutError:
        reason = f"no answer within {timeout:g} s"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    else:
        return
    raise SimulationError(
        f"cannot reach a Ray cluster at {address} ({reason}); start one with "
        "`ray start --head` or use --ray local"
    )


@contextlib.contextmanager
def connected(address: str, local_cpus: int | None = None) -> Iterator[Any]:
    """Connect this process to the Ray cluster at `address` for the block, then disconnect.

    "local" starts a cluster of `local_cpus` CPUs (all when None) in this process's
    session, stopped when the block ends; "auto" joins the running cluster `ray start`
    last made on this machine; anything else is a cluster address. When this process is
    already connected (called from a Ray driver), that connection is used and kept.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address == "local":
        kwargs.update(address="local", num_cpus=local_cpus, include_dashboard=False)
    elif address == "auto":
        found = _auto_address()
        if found is None:
            raise SimulationError(
                "--ray auto: no running Ray cluster found on this machine (start one with "
                "`ray start --head`, give its address, or use --ray local)"
            )
        probe(found)
        kwargs["address"] = found
    else:
        probe(address)
        kwargs["address"] = address
    with _stderr_kept() as said:
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            error = f"cannot connect to the Ray cluster at {address} ({first})"
        else:
            error = None
    if error is not None:
        if "Unauthenticated" in said.text or "AuthToken" in said.text:
            error += (
                "; the cluster refused this machine's authentication token: give it the "
                "cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
            )
        raise SimulationError(error)
    try:
        yield ray
    finally:
        ray.shutdown()


class _Captured:
    text = ""


@contextlib.contextmanager
def _stderr_kept() -> Iterator[_Captured]:
    """Keep what Ray's C++ core writes to stderr while connecting (a warning a second
    while it retries) off the terminal; the caller sums it up in its one-line error."""
    captured = _Captured()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded): nothing to hold back
        yield captured
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            captured.text = held.read().decode(errors="replace")


# ---------------------------------------------------------------------------- the task side
class DemoPayload:
    """One demo's input as a task receives it; reads like the DemoFile calls extraction makes."""

    def __init__(self, demo: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]):
        self.demo = demo
        self.arrays = arrays
        self.attrs = attrs

    def read(self, demo: str, key: str) -> np.ndarray:
        return self.arrays[key]

    def has(self, demo: str, key: str) -> bool:
        return key in self.arrays

    def demo_attrs(self, demo: str) -> dict[str, Any]:
        return dict(self.attrs)


def read_payload(df, demo: str, options: ExtractOptions) -> DemoPayload:
    """What a task needs of `demo`: states, actions, attributes, rewards/dones to copy."""
    keys = [C.STATES, C.ACTIONS]
    if options.copy_rewards:
        keys.append(C.REWARDS)
    if options.copy_dones:
        keys.append(C.DONES)
    arrays = {key: df.read(demo, key) for key in keys if df.has(demo, key)}
    return DemoPayload(demo, arrays, df.demo_attrs(demo))


_TASK_STATE: dict[str, Any] = {}


def extract_task(env_meta: dict, options: dict, payload: DemoPayload) -> tuple[str, Any]:
    """Run in a Ray worker: ("ok", DemoResult), ("error", reason) or ("init_error", reason).

    The simulator is kept in the worker process for the next demo with the same scene
    and options (Ray reuses a worker for the tasks of one job).
    """
    os.environ.setdefault("LP_NUM_THREADS", "1")  # one llvmpipe thread per CPU Ray gave us
    key = json.dumps([env_meta, options], sort_keys=True, default=str)
    opts = ExtractOptions(**{**options, "camera_names": tuple(options["camera_names"])})
    if _TASK_STATE.get("key") != key:
        old = _TASK_STATE.pop("env", None)
        _TASK_STATE.pop("key", None)
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()
        try:
            env = make_extraction_env(env_meta_from_dict(env_meta), opts)
        except DemosetError as exc:
            return "init_error", exc.message
        except Exception as exc:  # noqa: BLE001 - reported once for the whole run
            return "init_error", f"{type(exc).__name__}: {exc}".replace("\n", " ")
        _TASK_STATE.update(key=key, env=env)
    return extract_one(_TASK_STATE["env"], payload, payload.demo, opts)


# ---------------------------------------------------------------------------- the driver side
def _outcome(ray, ref, retries: int) -> tuple[str, Any]:
    """The task's answer, with Ray's own failures turned into one-line reasons."""
    from ray import exceptions as rex

    try:
        return ray.get(ref)
    except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError) as exc:
        return "error", (
            f"the Ray worker extracting it died {retries + 1} times "
            f"(killed, crashed or out of memory: {type(exc).__name__})"
        )
    except rex.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ImportError):  # demoset itself missing on the node
            return "init_error", f"{type(cause).__name__}: {cause}"
        text = str(cause if cause is not None else exc).strip().splitlines()
        return "error", f"Ray task failed: {text[-1] if text else type(exc).__name__}"
    except rex.RayError as exc:
        text = str(exc).strip().splitlines()
        return "error", f"{type(exc).__name__}: {text[0] if text else ''}"


def results_on_ray(
    path: str,
    demos: Sequence[str],
    options: ExtractOptions,
    address: str,
    local_cpus: int | None = None,
    report: Any = None,
    retries: int = RETRIES,
    window: int | None = None,
) -> Iterator[tuple[str, tuple[str, Any]]]:
    """Yield (demo, ("ok", DemoResult) | ("error", reason)) in `demos` order from Ray tasks.

    At most `window` demos (default twice the cluster's CPUs) past the next one to yield
    are submitted or held, which bounds the memory of results waiting for an earlier demo.
    `report.workers` is set to the cluster's CPU count when `report` is given.
    """
    with open_dataset(path) as df, connected(address, local_cpus) as ray:
        env_meta = source_env_meta(df).to_dict()
        cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        if report is not None:
            report.workers = cpus
        window = window or max(2 * cpus, 2)
        task = ray.remote(num_cpus=1, max_retries=retries)(extract_task)
        meta_ref = ray.put(env_meta)
        opts = asdict(options)
        pending: dict[Any, int] = {}
        answers: dict[int, tuple[str, Any]] = {}
        next_submit = next_yield = 0
        try:
            while next_yield < len(demos):
                while next_submit < len(demos) and next_submit < next_yield + window:
                    payload = read_payload(df, demos[next_submit], options)
                    pending[task.remote(meta_ref, opts, payload)] = next_submit
                    next_submit += 1
                if next_yield not in answers:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        answers[pending.pop(ref)] = _outcome(ray, ref, retries)
                while next_yield in answers:
                    status, value = answers.pop(next_yield)
                    if status == "init_error":
                        raise SimulationError(
                            f"a Ray worker cannot start the simulator: {value}; every node of "
                            "the cluster needs demoset with its simulator (pip install "
                            "'demoset[sim,ray]')"
                        )
                    yield demos[next_yield], (status, value)
                    next_yield += 1
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def cluster_overhead(address: str, demos: int = 20, payload_bytes: int = 0) -> dict[str, float]:
    """Seconds per demo Ray adds: an empty task round trip, and one returning `payload_bytes`.

    Used by benchmarks/extract.py to separate scheduling and moving frames back from the
    rendering itself.
    """
    with connected(address) as ray:
        task = ray.remote(num_cpus=1)(_echo)
        ray.get([task.remote(0) for _ in range(4)])  # start the workers first
        out = {}
        for name, size in (("empty", 0), ("payload", payload_bytes)):
            start = time.perf_counter()
            for _ in range(demos):
                ray.get(task.remote(size))
            out[name] = (time.perf_counter() - start) / demos
        return out


def _echo(size: int) -> np.ndarray:
    return np.ones(size, dtype=np.uint8)
