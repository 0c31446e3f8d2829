"""extract-obs --ray on a real Ray cluster (a head and a worker node on 127.0.0.1).

The cluster is started with `ray start` (its own temp dir and ports, no dashboard, one CPU
per node, a small object store) and torn down after the tests; one worker process is
SIGKILLed while it extracts a demo, and the output must still equal a local run. Bad
input: an unreachable address, Ray missing, and (slow: a second cluster) a cluster whose
workers lack robosuite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from demoset.sim.resume import partial_path

from tests.sim.files_alike import assert_same_file
from tests.sim.ray_cluster import Cluster, free_port

pytestmark = [pytest.mark.sim, pytest.mark.xdist_group("extract_cluster")]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "demoset.cli.main", "extract-obs", *args]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start_head()
        c.add_worker()
        yield c
    finally:
        c.stop()
    assert c.processes() == [], "Ray processes left running"


def test_ray_cluster_with_a_killed_worker_writes_the_local_result(
    cluster, small_scene, small_reference, tmp_path
):
    out = tmp_path / "ray.hdf5"
    proc = subprocess.Popen(
        cli(small_scene, "--out", str(out), "--ray", cluster.address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        busy = cluster.task_workers("extract_task")
        if busy:
            killed = busy[0]
            killed.kill()  # SIGKILL, mid-task
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None, "no Ray worker was seen running a demo"
    assert proc.returncode == 0, stderr
    assert "on Ray" in stdout and "2 workers" in stdout, stdout
    assert_same_file(small_reference, out)
    assert sorted(os.listdir(tmp_path)) == ["ray.hdf5"]


def test_unreachable_cluster_is_one_line_exit_2_and_fast(small_scene, tmp_path):
    out = tmp_path / "out.hdf5"
    began = time.monotonic()
    proc = subprocess.run(
        cli(small_scene, "--out", str(out), "--ray", f"127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        env={**os.environ, "DEMOSET_RAY_CONNECT_TIMEOUT": "2"},
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot reach a Ray cluster at 127.0.0.1:" in proc.stderr
    assert time.monotonic() - began < 60
    assert not out.exists()


def test_without_ray_installed_the_flag_says_how_to_install_it(small_scene, tmp_path):
    blocker = tmp_path / "no_ray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    proc = subprocess.run(
        cli(small_scene, "--out", str(tmp_path / "out.hdf5"), "--ray", "local"),
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    assert "pip install 'demoset[ray]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_cluster_without_robosuite_is_one_line_and_keeps_nothing_half_done(small_scene, tmp_path):
    """A cluster whose workers cannot import robosuite: its nodes see a `robosuite` package
    that fails to import, as on a machine where it is not installed."""
    shadow = tmp_path / "no_robosuite"
    (shadow / "robosuite").mkdir(parents=True)
    (shadow / "robosuite" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'robosuite'\")\n"
    )
    c = Cluster(pythonpath=[str(shadow)])
    try:
        c.start_head()
        out = tmp_path / "out.hdf5"
        proc = subprocess.run(
            cli(small_scene, "--out", str(out), "--ray", c.address),
            capture_output=True,
            text=True,
            timeout=300,
            env=c.env,
        )
    finally:
        c.stop()
    assert c.processes() == []
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "robosuite" in proc.stderr and "demoset[sim,ray]" in proc.stderr
    # nothing was completed, so nothing is left to resume
    assert not out.exists() and not os.path.exists(partial_path(out))


@pytest.mark.slow
def test_wrong_authentication_token_is_one_line(cluster, small_scene, tmp_path):
    out = tmp_path / "out.hdf5"
    proc = subprocess.run(
        cli(small_scene, "--out", str(out), "--ray", cluster.address),
        capture_output=True,
        text=True,
        env={**cluster.env, "RAY_AUTH_TOKEN": "0" * 32},
        timeout=300,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "authentication token" in proc.stderr
    assert not out.exists()
