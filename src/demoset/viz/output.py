"""Writing output files so that an interrupted run never leaves half a file under its name."""

from __future__ import annotations

import os

from demoset.errors import WriteError
from demoset.fsutil import atomic_output


def write_atomic(path: str | os.PathLike, data: bytes | str) -> str:
    """Write `data` to a hidden temporary file beside `path`, then rename it into place.

    Raises WriteError (naming the file) when the directory is missing or not writable.
    """
    path = os.fspath(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with atomic_output(path, suffix=".tmp") as tmp, open(tmp, "wb") as fh:
            fh.write(payload)
    except OSError as exc:
        raise WriteError(f"cannot write ({exc.strerror or exc})", path) from None
    return path
