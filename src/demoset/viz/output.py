"""Writing output files so that an interrupted run never leaves half a file under its name."""

from __future__ import annotations

import os
import tempfile

from demoset.errors import WriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes | str) -> str:
    """Write `data` to a hidden temporary file beside `path`, then rename it into place.

    Raises WriteError (naming the file) when the directory is missing or not writable.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(
            prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder
        )
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise WriteError(f"cannot write ({exc.strerror or exc})", path) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path
