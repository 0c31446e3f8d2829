"""Whatever h5py raises on damaged or hostile content, turned into one DemosetError.

h5py answers a damaged file with OSError, KeyError, TypeError, RecursionError and more.
Readers of the layout run their HDF5 calls under `h5_errors` (a block), `guarded_method`
(methods of objects with a `.path`) or `untrusted_input` (converter entry points), so a
bad file comes out as one line naming the file and, where known, the HDF5 path; the same
exception types raised by demoset's own code (a bug) are left alone.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager

from demoset.errors import DemosetError, LayoutError
from demoset.format.isolation import beat, in_isolated_child

READ_ERRORS = (
    OSError,
    RuntimeError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    OverflowError,
    UnicodeError,
    RecursionError,
    SystemError,
)
"""What h5py (and numpy on what it returns) raise on damaged or hostile content."""


def describe_error(exc: BaseException) -> str:
    """The first line of an exception, short, for a one-line message."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def raised_by_file(exc: BaseException) -> bool:
    """True for an error the file's content caused: an OSError, or one raised inside h5py.

    A KeyError or TypeError from h5py means a broken link, a bad name or a bad type in
    the file; the same error raised by demoset's own code is a bug and is left alone.
    """
    if isinstance(exc, OSError):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("h5py"):
            return True
        tb = tb.tb_next
    return False


@contextmanager
def h5_errors(path, h5path: str | None = None, error=None, what: str = "cannot read"):
    """Turn what h5py raises on a damaged file into one DemosetError naming the file."""
    try:
        yield
    except DemosetError:
        raise
    except READ_ERRORS as exc:
        if not raised_by_file(exc):
            raise
        cls = error or LayoutError
        raise cls(f"{what} ({describe_error(exc)})", path, h5path) from exc


def untrusted_input(error=None, path_arg: int = 0):
    """Decorator for entry points that read a file given by the user (converters).

    Whatever h5py raises on a damaged file (an HDF5 error, a KeyError from a broken link)
    comes out as `error` (default LayoutError) naming the file given as positional
    argument `path_arg`; DemosetErrors pass through unchanged.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            path = args[path_arg] if len(args) > path_arg else None
            with h5_errors(os.fspath(path) if path is not None else None, error=error):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def guarded_method(method):
    """Decorator for methods of objects with a `.path` that read an untrusted file.

    Whatever h5py raises on damaged content comes out as a LayoutError naming the file.
    """
    where = f"{method.__qualname__}"

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if in_isolated_child():  # say where we are (the outermost call), for a stall report
            return _beating_call(where, wrapped, self, args, kwargs)
        return wrapped(self, *args, **kwargs)

    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DemosetError:
            raise
        except READ_ERRORS as exc:
            if not raised_by_file(exc):
                raise
            raise LayoutError(
                f"cannot read ({describe_error(exc)})", getattr(self, "path", None)
            ) from exc

    return wrapper


_guarded_depth = 0


def _beating_call(where: str, fn, self, args, kwargs):
    global _guarded_depth
    if _guarded_depth == 0:
        beat(None, f"{where}({args[0]!r})" if args and isinstance(args[0], str) else where)
    _guarded_depth += 1
    try:
        return fn(self, *args, **kwargs)
    finally:
        _guarded_depth -= 1
