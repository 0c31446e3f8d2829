"""pytest fixtures shared by every test folder; plain helpers live in tests/helpers.py.

Nothing here downloads anything: every dataset a test uses is made by the test.
"""

from __future__ import annotations

import pytest

from tests.helpers import write_dataset


@pytest.fixture
def make_dataset(tmp_path):
    """Factory: make_dataset(name="d.hdf5", **write_dataset kwargs) -> path."""
    counter = {"n": 0}

    def factory(name: str | None = None, **kwargs) -> str:
        counter["n"] += 1
        return write_dataset(tmp_path / (name or f"dataset_{counter['n']}.hdf5"), **kwargs)

    return factory
