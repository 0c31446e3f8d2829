"""One exception family for everything demoset refuses to do.

Library code raises these; the CLI turns any of them into a single line on stderr and
exit code 2. The message names the file and, where it helps, the HDF5 path, so the user
can find the problem without a traceback.
"""

from __future__ import annotations

import os


class DemosetError(Exception):
    """Base of every error demoset raises on purpose.

    `path` is the file concerned, `h5path` the object inside it (both optional).
    """

    def __init__(
        self, message: str, path: str | os.PathLike | None = None, h5path: str | None = None
    ):
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.h5path = h5path
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = []
        if self.path:
            parts.append(str(self.path))
        if self.h5path:
            parts.append(self.h5path if self.h5path.startswith("/") else "/" + self.h5path)
        parts.append(self.message)
        return ": ".join(parts).replace("\n", " ")


class FileAccessError(DemosetError):
    """The file is missing, unreadable, not HDF5, or locked by another process."""


class FileLockedError(FileAccessError):
    """Another process holds the file open for writing."""


class LayoutError(DemosetError):
    """The file is HDF5 but not (or not correctly) in the robomimic layout."""


class FilterKeyError(DemosetError):
    """A filter key that does not exist, already exists, or names unknown demos."""


class DemoNotFoundError(DemosetError):
    """A demo name that is not in the file."""


class WriteError(DemosetError):
    """Writing failed (bad shapes, full disk, read-only place, a second writer)."""


class InsufficientMemoryError(DemosetError):
    """A cache or whole-array read would not fit in available memory."""


class UnsafeFileError(DemosetError):
    """The file points outside itself (external links, virtual datasets)."""


class ConversionError(DemosetError):
    """A source dataset could not be converted."""


class SimulationError(DemosetError):
    """The simulator could not be created or driven as asked."""


class ConfigError(DemosetError):
    """A training or command configuration is wrong (unknown key, bad value)."""


class DownloadError(DemosetError):
    """A download failed or its size did not match."""
