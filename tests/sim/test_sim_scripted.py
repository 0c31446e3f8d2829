"""Scripted demonstrators succeed often enough to be worth collecting with (slow: real episodes).

Each task runs a fixed number of noisy episodes (attempts = episodes) and checks the share
that robosuite's own success check accepted and that ended up in the raw file.
"""

from __future__ import annotations

import h5py
import pytest

from demoset.sim.collect import collect_demos

pytestmark = [pytest.mark.sim, pytest.mark.slow, pytest.mark.xdist_group("sim")]


@pytest.mark.parametrize(
    "env_name, episodes, minimum",
    [("Lift", 20, 0.9), ("Stack", 10, 0.8), ("PickPlaceCan", 10, 0.8)],
)
def test_scripted_success_rate(tmp_path, env_name, episodes, minimum):
    out = tmp_path / f"{env_name}.hdf5"
    report = collect_demos(env_name, episodes, out, seed=11, max_attempts=episodes)
    assert report.attempts == episodes
    assert report.success_rate >= minimum, f"{env_name}: {report.kept}/{report.attempts}"
    with h5py.File(out, "r") as f:
        assert len(f["data"]) == report.kept
        assert f["data"].attrs["env"] == env_name
