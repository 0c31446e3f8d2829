"""File-system helpers: temporary files beside a target (outputs that appear whole or not
at all), whether two paths name one file, whether an error means the disk is full."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the names in the directory holding `path` durable (creations, renames, unlinks).

    fsync of a file makes its bytes durable, not its name: after a power cut a file that
    was created, renamed or deleted may be back under its old name (or no name) until its
    directory has been fsynced. Silently skipped where directories cannot be fsynced.
    """
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # no read access to the directory (or no such thing on this platform)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def replace_durably(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """os.replace, then fsync of the directory: after it returns a power cut keeps `dst`.

    `src` must already be fsynced (its bytes durable), or a power cut may leave `dst`
    under its name with the old or no content.
    """
    os.replace(src, dst)
    fsync_dir(dst)


def replace_folder(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the complete folder `tmp` to `target`, replacing an existing folder.

    The old folder is first moved aside into a hidden temporary folder beside it and
    deleted only after the new one has its name, so at every moment `target` is either the
    old folder or the new one.
    """
    tmp, target = os.fspath(tmp), os.fspath(target)
    if os.path.exists(target):
        old = tempfile.mkdtemp(
            prefix=f".{os.path.basename(target)}.", suffix=".old", dir=os.path.dirname(target)
        )
        os.rename(target, os.path.join(old, "d"))
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)
    fsync_dir(target)


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, suffix: str = ".partial") -> Iterator[str]:
    """Write a file whole or not at all: yield a temporary path beside `target` to write to.

    When the block ends normally the temporary file is renamed to `target` (replacing any
    file there); when it raises, including KeyboardInterrupt, the temporary file is removed
    and `target` is untouched. `suffix` ends the temporary name (keep the extension when a
    writer picks its format from it, e.g. ".partial.mp4"). The temporary file is fsynced
    before the rename and the directory after it, so a power cut leaves the old target or
    the whole new one. Raises OSError when the directory is missing or not writable;
    callers turn it into their WriteError.
    """
    target = os.fspath(target)
    tmp = temp_path_beside(target, suffix=suffix)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        replace_durably(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same file on disk."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def is_enospc(exc: BaseException) -> bool:
    """True when an error (OSError, or h5py's text of one) says the disk is full."""
    text = str(exc)
    return (
        getattr(exc, "errno", None) == errno.ENOSPC
        or "No space left" in text
        or "errno = 28" in text
    )
