"""Every lock demoset takes on a data file: which, who takes it, when, for how long.

HDF5's own lock is held only while a file is open and says nothing of demoset's commits,
so demoset adds its own. All lock files live in the temp directory
(`<tmp>/demoset-locks/<st_dev>-<st_ino>.<kind>`, see `lock_path`), named by the data
file's device and inode, so nothing is left beside the user's data, the name follows the
file through a rename, and the kernel drops a lock when its process dies.

The protocol, as the code does it:

1. **Writer lock** (`<key>.lock`, `WriterLock`): exclusive, never waited for. Taken by a
   `DatasetWriter` (format/writer.py) for its whole life and by `edit_in_place`
   (format/journal.py) for the whole edit; a second demoset writer on the same file is
   refused with a WriteError. `recover_if_abandoned` takes it for a moment to learn that
   no live writer owns a journal left beside the file.
2. **Commit gate** (`<key>.commit`, `Turnstile`): readers hold it *shared* only while they
   open a file (`reader_gate`): every `open_h5`, a follow-mode `DemoFile` while it rereads
   its demo list in `refresh()`, and a follow-mode loader while it opens a session. A
   committer (`JournaledFile.commit`, and `recover` finishing a killed writer's commit)
   holds it *exclusive* from before it takes the data file's lock until its journal is
   copied into place (milliseconds, usually), so new readers queue behind the commit
   instead of keeping the file busy forever. Readers wait up to `COMMIT_WAIT` seconds at
   a closed gate; a committer waits up to its `timeout` for the gate to close.
3. **The data file's own flock** (the lock HDF5 takes: shared to read, exclusive to
   write): a `JournaledFile` holds it shared for as long as it is open (so HDF5 writers
   elsewhere are refused while readers are let in) and exclusive only while a commit
   copies journal records into place. Readers opened by h5py with HDF5 file locking on
   hold it shared while open, so a commit waits for them (up to the writer's
   `lock_timeout`). A follow-mode loader opens with HDF5 locking off and instead holds it
   shared on its own descriptor for one read session (`reader_gate(hold_fd=...)`), so a
   commit never changes HDF5's structure under a session.

The gate is reentrant within one thread: nested `reader_gate`s on the same file (the
loader opening a `DemoFile` that calls `open_h5`) take the lock file once.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from demoset.errors import FileLockedError, WriteError

COMMIT_WAIT = 30.0
"""Seconds a reader waits for a demoset writer's commit (milliseconds, usually) to end."""


def lock_dir() -> str:
    """Directory of demoset's lock (and fallback journal) files, in the temp directory."""
    path = os.path.join(tempfile.gettempdir(), "demoset-locks")
    os.makedirs(path, exist_ok=True)
    return path


def lock_path(path: str | os.PathLike, kind: str) -> str:
    """`<tmp>/demoset-locks/<st_dev>-<st_ino>.<kind>` for the data file at `path`.

    Kinds in use: "lock" (writer lock), "commit" (commit gate), "journal" (a commit's
    journal when the directory of the file is not writable).
    """
    st = os.stat(path)
    return os.path.join(lock_dir(), f"{st.st_dev}-{st.st_ino}.{kind}")


def flock_within(fd: int, kind: int, timeout: float, path: str, what: str) -> None:
    """flock with a deadline (polling); raises FileLockedError(`what`, `path`) at the end."""
    deadline = time.monotonic() + max(timeout, 0.0)
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise FileLockedError(what, path) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


# ---------------------------------------------------------------------------- 1. writer lock
class WriterLock:
    """An exclusive, non-blocking lock on a data file for the lifetime of one writer."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.lock_path = lock_path(self.path, "lock")
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


# ---------------------------------------------------------------------------- 2. commit gate
class Turnstile:
    """The commit gate of one data file: readers pass it shared, a committer closes it.

    Readers use `reader_gate`, not this class; committers call `close_gate` before they
    take the data file's lock exclusively and `release` when their journal is in place.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.lock_path = lock_path(self.path, "commit")
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o666)
        return self._fd

    def enter(self) -> bool:
        """Hold the gate shared; False (not held) when a commit is under way."""
        try:
            fcntl.flock(self._open(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close_gate(self, timeout: float) -> None:
        """Hold the gate exclusive, waiting up to `timeout` s for readers inside to leave."""
        flock_within(
            self._open(),
            fcntl.LOCK_EX,
            timeout,
            self.path,
            "readers kept opening the file; cannot commit",
        )

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_held = threading.local()  # .depth: {abspath: nesting depth of reader_gate in this thread}


def _poll(ready, deadline: float, path: str, message: str) -> None:
    delay = 0.005
    while not ready():
        if time.monotonic() > deadline:
            raise FileLockedError(message, path)
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _take_shared(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def reader_gate(
    path: str | os.PathLike,
    timeout: float = COMMIT_WAIT,
    *,
    hold_fd: int | None = None,
    waited: str | None = None,
) -> Iterator[None]:
    """The one way a reader passes the commit gate: hold it shared for the `with` body.

    Waits up to `timeout` s while a commit runs, then raises FileLockedError (`waited`
    is its message). A path that is not a file, or a temp directory where the lock file
    cannot be made, passes ungated (HDF5's own lock still keeps commits out). Nested
    entries for the same file in one thread take the lock file only once.

    `hold_fd`: also take a shared flock on this descriptor of the data file (waiting for
    the same deadline) and keep it after the body ends, so the caller's reads are safe
    from commits until it unlocks the descriptor itself; released if the body raises.
    """
    path = os.fspath(path)
    key = os.path.abspath(path)
    deadline = time.monotonic() + max(timeout, 0.0)
    depth = _held.__dict__.setdefault("depth", {})
    gate: Turnstile | None = None
    if not depth.get(key) and os.path.isfile(path):
        try:
            gate = Turnstile(path)
            gate._open()
        except OSError:  # no lock directory: the flock alone still keeps commits out
            gate = None
    try:
        if gate is not None:
            _poll(
                gate.enter,
                deadline,
                path,
                waited or f"a demoset writer has been saving a demo for {timeout:.0f} s; try again",
            )
        depth[key] = depth.get(key, 0) + 1
        try:
            if hold_fd is not None:
                _poll(
                    lambda: _take_shared(hold_fd),
                    deadline,
                    path,
                    f"another program has held the file for writing for {timeout:.0f} s",
                )
            try:
                yield
            except BaseException:
                if hold_fd is not None:
                    fcntl.flock(hold_fd, fcntl.LOCK_UN)
                raise
        finally:
            depth[key] -= 1
    finally:
        if gate is not None:
            gate.release()
            gate.close()
