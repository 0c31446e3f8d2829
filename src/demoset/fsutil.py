"""Temporary files beside a target, for outputs that must appear whole or not at all."""

from __future__ import annotations

import os
import tempfile


def _current_umask() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting and restoring
    os.umask(mask)
    return mask


def temp_path_beside(target: str | os.PathLike, suffix: str = ".partial") -> str:
    """Create an empty hidden temporary file in the target's directory and return its path.

    The file gets the permissions a plain `open(target, "w")` would give (0666 less the
    umask), not mkstemp's private 0600, so renaming it into place yields a normal file.
    Raises OSError when the directory is not writable.
    """
    target = os.fspath(target)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
    finally:
        os.close(fd)
    return tmp
