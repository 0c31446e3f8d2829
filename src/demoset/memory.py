"""Refuse work that would not fit in memory, before allocating anything.

Being killed by the OS halfway through caching a 10 GB dataset loses minutes and says
nothing; a clear error up front names the figure and what to do instead.
"""

from __future__ import annotations

import psutil

from demoset.errors import InsufficientMemoryError

HEADROOM = 0.9
"""Fraction of available memory a single cache or read may take."""


def available_bytes() -> int:
    """Memory the OS can give this process now without swapping (psutil's `available`)."""
    return int(psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def ensure_fits(
    nbytes: int,
    what: str,
    path: str | None = None,
    suggestion: str | None = None,
    available: int | None = None,
) -> None:
    """Raise InsufficientMemoryError when `nbytes` exceed the memory available now.

    `what` says what would be held ("cache_mode='all' of 3 arrays"); `suggestion` what
    to do instead ("use cache_mode='low_dim'").
    """
    avail = available_bytes() if available is None else available
    if nbytes > avail * HEADROOM:
        msg = f"{what} needs {format_bytes(nbytes)} but only {format_bytes(avail)} of memory is available"
        if suggestion:
            msg += f"; {suggestion}"
        raise InsufficientMemoryError(msg, path)
