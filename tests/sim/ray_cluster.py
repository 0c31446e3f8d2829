"""A real Ray cluster on 127.0.0.1 for tests: `ray start` head and worker nodes, torn down.

Each `ray start` runs in its own session with its own temp dir and free ports, so it
does not meet any other Ray on the machine; teardown kills exactly the processes of those
sessions (SIGTERM, then SIGKILL), which is what `ray stop` does, minus `ray stop`'s
killing of every Ray process of the user on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

import demoset

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
SRC = os.path.dirname(os.path.dirname(os.path.abspath(demoset.__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Head (and worker) nodes started with `ray start`; `address` is 127.0.0.1:PORT."""

    def __init__(self, pythonpath: list[str] | None = None):
        self.temp_dir = tempfile.mkdtemp(prefix="dsray", dir="/tmp")  # short: socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sessions: list[int] = []
        self.env = dict(os.environ)
        paths = [*(pythonpath or []), SRC, self.env.get("PYTHONPATH", "")]
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        # token authentication with a token of its own: nothing read from ~/.ray
        self.env.update(
            RAY_USAGE_STATS_ENABLED="0",
            LP_NUM_THREADS="1",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=uuid.uuid4().hex,
        )

    def _start(self, *args: str) -> None:
        common = [
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--object-store-memory=200000000",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--disable-usage-stats",
        ]
        proc = subprocess.Popen(
            [RAY, "start", *args, *common],
            env=self.env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.sessions.append(proc.pid)  # its daemons keep this session id
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed: {out[-2000:]}")

    def start_head(self) -> None:
        self._start(
            "--head",
            f"--port={self.port}",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
        )

    def add_worker(self) -> None:
        self._start(f"--address={self.address}")

    def processes(self) -> list[psutil.Process]:
        out = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) in self.sessions:
                    out.append(proc)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        return out

    def task_workers(self, task_name: str) -> list[psutil.Process]:
        """Worker processes running `task_name` now (Ray titles them ray::<task>)."""
        busy = []
        for proc in self.processes():
            try:
                if " ".join(proc.cmdline()).startswith(f"ray::{task_name}"):
                    busy.append(proc)
            except psutil.Error:
                pass
        return busy

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            procs = self.processes()
            for proc in procs:
                try:
                    proc.send_signal(sig)
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(procs, timeout=5)
            if not alive:
                break
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        time.sleep(0.1)
