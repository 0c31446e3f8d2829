"""A writer lock, so that two demoset writers never append to one file at once.

HDF5's own lock is held only while a file is open. A demoset writer in follow (SWMR) mode
lets readers open the file between its commits, so it also holds this lock for its whole
life. The lock file lives in the temp directory, named by the data file's device
and inode, so nothing is left beside the user's data; the kernel drops it if the process
dies.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

from demoset.errors import WriteError


def lock_file_for(path: str, kind: str) -> str:
    """A lock file in the temp directory named by the data file's device and inode."""
    st = os.stat(path)
    lock_dir = os.path.join(tempfile.gettempdir(), "demoset-locks")
    os.makedirs(lock_dir, exist_ok=True)
    return os.path.join(lock_dir, f"{st.st_dev}-{st.st_ino}.{kind}")


class WriterLock:
    """An exclusive, non-blocking lock on a data file for the lifetime of one writer."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.lock_path = lock_file_for(self.path, "lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriteError(
                "another demoset writer is appending to this file; only one writer at a time",
                self.path,
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class CommitLock:
    """Short locks around each commit of a follow-mode writer and each open of a reader.

    The writer holds it exclusively while it adds one demo; readers hold it shared while
    they open the file and read its index. Readers open the file without HDF5's own lock,
    so a reader that keeps the file open does not block the writer, and it never sees a
    half-written demo because committed demos are never changed afterwards.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.lock_path = lock_file_for(self.path, "commit")
        self._fd: int | None = None

    def _lock(self, kind: int) -> CommitLock:
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o666)
        fcntl.flock(fd, kind)
        self._fd = fd
        return self

    def exclusive(self) -> CommitLock:
        return self._lock(fcntl.LOCK_EX)

    def shared(self) -> CommitLock:
        return self._lock(fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CommitLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
