"""Temporary files beside a target and whole-or-nothing outputs (demoset.fsutil)."""

from __future__ import annotations

import os
import stat

import pytest

from demoset.fsutil import atomic_output, temp_path_beside


def test_atomic_output_renames_into_place_with_ordinary_permissions(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_output(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".")
        with open(tmp, "wb") as fh:
            fh.write(b"new")
        assert target.read_bytes() == b"old"  # nothing replaced before the block ends
    assert target.read_bytes() == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_atomic_output_failure_leaves_target_and_no_temporary_file(tmp_path, error):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_output(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise error()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_missing_directory_is_an_oserror(tmp_path):
    with pytest.raises(OSError), atomic_output(tmp_path / "nowhere" / "out.bin"):
        pass
    assert temp_path_beside(tmp_path / "x.mp4", suffix=".partial.mp4").endswith(".partial.mp4")
