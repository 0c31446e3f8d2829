"""Shared by the old-robosuite tests: fixture paths and robosuite 1.4.1's cached assets.

The fixtures under tests/fixtures/oldsuite were made by the real old stack
(scripts/old_stack/build_fixture.sh: robosuite 1.4.1, mujoco 2.3.7, robomimic 0.3.0).
robosuite 1.4.1's assets come from the user cache that scripts/setup.sh fills with
`pip download` at set-up time; when it is empty the session fixture fills it the same way
(the one download the issue allows). The tests themselves run with downloads turned off.
"""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "oldsuite"
RAW_V141 = FIXTURES / "v141_raw.hdf5"
REFERENCE_V141 = FIXTURES / "v141_robomimic_obs.hdf5"
LAYOUT_V13 = FIXTURES / "v13_layout"
VERSION = "1.4.1"


@pytest.fixture(scope="session")
def assets_141() -> Path:
    """robosuite 1.4.1's models/assets folder in the user cache (filled once)."""
    from demoset.sim.legacy_assets import cached_assets_dir, fetch_assets

    cached = cached_assets_dir(VERSION)
    if (cached / "robots").is_dir():
        return cached
    return fetch_assets(VERSION)


@pytest.fixture
def offline(monkeypatch, assets_141):
    """No registry access for the test: the cache (or a given folder) or an error."""
    monkeypatch.setenv("DEMOSET_NO_DOWNLOAD", "1")
    monkeypatch.delenv("DEMOSET_ROBOSUITE_ASSETS", raising=False)
    monkeypatch.delenv("DEMOSET_ROBOSUITE_VERSION", raising=False)
    return assets_141


def stored_xml(demo: str = "demo_1") -> str:
    import h5py

    with h5py.File(RAW_V141, "r") as f:
        return f["data"][demo].attrs["model_file"]


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
