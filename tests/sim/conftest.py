"""A tiny Lift scene shared by the resume and Ray extraction tests (tests/sim only).

One scripted demo is collected with the real simulator and cut into short demos (their
states are real simulator states of one model), so extracting a camera's frames takes a
few seconds: long enough to interrupt, short enough to run many times.
"""

from __future__ import annotations

import fcntl
import os

import pytest

SMALL_DEMOS = 6
SMALL_STEPS = 7


def build_small_scene(d) -> str:
    """Write `small.hdf5` in `d`: SMALL_DEMOS demos of SMALL_STEPS steps and a filter key."""
    from demoset.convert.robosuite_raw import convert_robosuite_raw
    from demoset.format import DatasetWriter, open_dataset
    from demoset.sim.collect import collect_demos

    collect_demos("Lift", 1, d / "one_raw.hdf5", seed=3, overwrite=True)
    convert_robosuite_raw(d / "one_raw.hdf5", d / "one.hdf5", overwrite=True)
    with open_dataset(d / "one.hdf5") as df:
        demo = df.demos[0]
        states = df.read(demo, "states")
        actions = df.read(demo, "actions")
        model = df.demo_attrs(demo).get("model_file")
        env_meta = df.env_meta
    assert len(states) >= SMALL_DEMOS * SMALL_STEPS, len(states)
    tmp = d / "small.hdf5.tmp"
    with DatasetWriter(tmp, env_meta=env_meta, mode="w", overwrite=True) as w:
        for i in range(SMALL_DEMOS):
            part = slice(i * SMALL_STEPS, (i + 1) * SMALL_STEPS)
            w.add_demo(actions=actions[part], states=states[part], model_file=model)
        w.set_filter_key("train", [f"demo_{i}" for i in range(0, SMALL_DEMOS, 2)])
    os.replace(tmp, d / "small.hdf5")
    return str(d / "small.hdf5")


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory) -> str:
    """Path of the tiny Lift dataset, built once (and shared by pytest-xdist workers)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        d = tmp_path_factory.getbasetemp().parent / "small_scene"
    else:
        d = tmp_path_factory.mktemp("small_scene")
    d.mkdir(exist_ok=True)
    with open(d.parent / "small_scene.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / "small.hdf5").exists():
            build_small_scene(d)
    return str(d / "small.hdf5")


@pytest.fixture(scope="session")
def small_reference(small_scene, tmp_path_factory) -> str:
    """An uninterrupted local extraction of the tiny scene (low-dim observations)."""
    from demoset.sim.extract import extract_obs

    out = tmp_path_factory.mktemp("small_reference") / "reference.hdf5"
    extract_obs(small_scene, out)
    return str(out)
