"""Run a reader in a forked child process, so a file that makes HDF5 loop forever cannot hang us.

Some damage makes HDF5's C code loop forever (measured: HDF5 2.0.0, bundled with h5py
3.16, never returns from reading a vlen string attribute whose global heap collection has
a free-space record of size 0). No signal handler or alarm can interrupt C code, so the
only bound is another process. `run_isolated(fn, ...)` forks (cheap: a few milliseconds,
no new interpreter), runs `fn` in the child and returns its result, or re-raises its
exception, in the parent.

The child reports progress through a small shared-memory block: every `beat()` (called
by the format layer before each object, attribute and array it reads) and every progress
callback counts as progress, and records the HDF5 path being read. When the child makes
no progress for the stall limit (`DEMOSET_STALL_SECONDS`, default 60 s) or dies by a
signal, the parent kills it and raises `UnsafeFileError` naming the file and the HDF5
path last reached. Files a killed child was writing (`cleanup=`) are removed.

Only the standard library (and `demoset.errors`, when a child's error is rebuilt) is
imported here: `beat()` sits on the format layer's hot paths. `preflight`, the isolated
metadata check, lives with the checks it runs in format/validate.py.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

STALL_ENV = "DEMOSET_STALL_SECONDS"
DEFAULT_STALL_SECONDS = 60.0
"""How long a child may go without progress before it is killed (HDF5 reads of one
object take milliseconds; a minute leaves room for slow disks and network mounts)."""

_POLL_SECONDS = 0.05
_BOARD = struct.Struct("<QqqI")  # beat count, progress done, progress total, text length
_BOARD_BYTES = 4096
_TEXT_MAX = _BOARD_BYTES - _BOARD.size

_board: mmap.mmap | None = None  # set in a child only
_beats = 0


def stall_seconds(value: float | None = None) -> float:
    """The stall limit: `value`, else $DEMOSET_STALL_SECONDS, else 60 s."""
    if value is not None:
        return float(value)
    text = os.environ.get(STALL_ENV, "").strip()
    if text:
        try:
            seconds = float(text)
        except ValueError:
            seconds = 0.0
        if seconds > 0:
            return seconds
    return DEFAULT_STALL_SECONDS


def in_isolated_child() -> bool:
    """True inside a child started by `run_isolated`."""
    return _board is not None


def beat(h5path: str | None = None, detail: str | None = None) -> None:
    """Tell the parent (if any) that the child is alive and about to read `h5path`.

    Costs one global lookup outside an isolated child.
    """
    if _board is None:
        return
    _post(h5path, detail, None, None)


def _post(h5path, detail, done, total) -> None:
    global _beats
    board = _board
    if h5path is not None or detail is not None:
        text = _where(h5path, detail).encode("utf-8", "replace")[:_TEXT_MAX]
        board[_BOARD.size : _BOARD.size + len(text)] = text
    else:
        text = None
    _beats += 1
    old = _BOARD.unpack_from(board, 0)
    _BOARD.pack_into(
        board,
        0,
        _beats,
        old[1] if done is None else done,
        old[2] if total is None else total,
        old[3] if text is None else len(text),
    )


@contextlib.contextmanager
def waiting(h5path: str | None = None, detail: str | None = None):
    """Keep beating while the block waits outside HDF5 (an fsync on a busy disk).

    Such a wait is slow, not stuck, and must not be taken for a stall. Outside an
    isolated child it does nothing.
    """
    if _board is None:
        yield
        return
    import threading

    beat(h5path, detail)
    stop = threading.Event()

    def keep_beating() -> None:
        while not stop.wait(_POLL_SECONDS * 4):
            _post(None, None, None, None)

    thread = threading.Thread(target=keep_beating, name="demoset-waiting", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _where(h5path: str | None, detail: str | None) -> str:
    if h5path and detail:
        return f"{h5path} ({detail})"
    return h5path or detail or ""


def _child_progress(done: int, total: int) -> None:
    _post(None, None, int(done), int(total))


# ---------------------------------------------------------------------------- parent side
def run_isolated(
    fn: Callable[..., Any],
    *args: Any,
    path: str | os.PathLike | None = None,
    stall: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    cleanup: Iterable[str | os.PathLike] = (),
    **kwargs: Any,
) -> Any:
    """Call `fn(*args, **kwargs)` in a forked child; return its result or raise its exception.

    `path` is the file being read (named in errors). With `progress`, `fn` is called with
    `progress=` a callback whose (done, total) reaches `progress` in the parent. The result
    and exceptions travel back pickled (they are values demoset's own code made, never
    bytes from the file). Raises UnsafeFileError when the child makes no progress for
    `stall` seconds (see `stall_seconds`) or dies by a signal; the files in `cleanup`
    are removed then. It forks while holding h5py's global lock, so another thread of the
    caller cannot be inside HDF5 at that moment (other libraries' locks are not held). The
    child is killed when the caller's process dies (Linux).
    """
    limit = stall_seconds(stall)
    board = mmap.mmap(-1, _BOARD_BYTES)
    read_fd, write_fd = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    parent = os.getpid()
    with _no_thread_inside_h5py():
        pid = os.fork()
    if pid == 0:  # the child: never returns into the caller
        try:
            os.close(read_fd)
            _die_with_parent(parent)
            _child_main(board, write_fd, fn, args, kwargs, progress is not None)
        finally:
            os._exit(70)
    os.close(write_fd)
    try:
        payload, status = _await_child(pid, read_fd, board, limit, progress)
    except BaseException:
        _kill(pid)
        _remove(cleanup)
        raise
    finally:
        os.close(read_fd)
    if payload is None:
        _remove(cleanup)
        raise _no_answer(status, board, path, limit)
    kind, value = pickle.loads(payload)
    board.close()
    if kind == "ok":
        return value
    raise _rebuild(value)


@contextlib.contextmanager
def _no_thread_inside_h5py():
    """Hold h5py's global lock while forking: a lock another thread held at the fork would
    stay locked forever in the child (and look like a stall)."""
    try:
        from h5py._objects import phil
    except ImportError:  # h5py not imported (or its internals moved): nothing to hold
        yield
        return
    with phil:
        yield


def _await_child(pid: int, read_fd: int, board: mmap.mmap, limit: float, progress):
    """Collect the child's answer; returns (pickled answer or None, wait status or None)."""
    chunks: list[bytes] = []
    last_beats = -1
    last_progress: tuple[int, int] | None = None
    last_change = time.monotonic()
    finished = False
    while not finished:
        ready, _, _ = select.select([read_fd], [], [], _POLL_SECONDS)
        if ready:
            block = os.read(read_fd, 1 << 16)
            if block:
                chunks.append(block)
                last_change = time.monotonic()
            else:
                finished = True  # the child closed its end: it answered or died
        beats, done, total, _ = _BOARD.unpack_from(board, 0)
        if beats != last_beats:
            last_beats, last_change = beats, time.monotonic()
            if progress is not None and (done, total) != last_progress and total > 0:
                last_progress = (done, total)
                progress(done, total)
        elif not finished and time.monotonic() - last_change > limit:
            _kill(pid)
            return None, None
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    answered = data and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return (data if answered else None), status


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _remove(paths: Iterable[str | os.PathLike]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass


def _no_answer(status: int | None, board: mmap.mmap, path, limit: float) -> BaseException:
    from demoset.errors import UnsafeFileError

    _, _, _, length = _BOARD.unpack_from(board, 0)
    where = bytes(board[_BOARD.size : _BOARD.size + min(length, _TEXT_MAX)]).decode(
        "utf-8", "replace"
    )
    board.close()
    at = f" while reading {where}" if where else ""
    if status is None:
        err = UnsafeFileError(
            f"HDF5 stopped responding for {limit:g} s{at}: the file is damaged "
            "(HDF5 loops forever on some damage); `demoset repair` salvages what it can",
            path,
        )
    elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT:
        board.close()
        return KeyboardInterrupt()  # Ctrl-C reached the child first
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        err = UnsafeFileError(
            f"HDF5 crashed ({name}){at}: the file is damaged; "
            "`demoset repair` salvages what it can",
            path,
        )
    else:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
        return RuntimeError(f"isolated reader of {path} exited {code} without an answer")
    err.stalled_at = where  # where the child was (HDF5 path and detail), for repair_isolated
    return err


def _rebuild(value: tuple) -> BaseException:
    """The child's exception: DemosetErrors rebuilt from their fields, others unpickled."""
    kind = value[0]
    if kind == "demoset":
        from demoset import errors

        _, name, message, path, h5path = value
        cls = getattr(errors, name, None)
        if not (isinstance(cls, type) and issubclass(cls, errors.DemosetError)):
            cls = errors.DemosetError
        return cls(message, path, h5path)
    _, exc, text = value
    if exc is None:
        exc = RuntimeError(text.strip().splitlines()[-1] if text.strip() else "error in child")
    exc.add_note("raised in the isolated child process:\n" + text)
    return exc


# ---------------------------------------------------------------------------- child side
def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this child when its parent dies (Linux), so a child stuck in
    HDF5 never outlives a parent that was killed itself."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: a killed parent can leave its child running
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(70)


def _child_main(board, write_fd, fn, args, kwargs, with_progress: bool) -> None:
    global _board
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent handles Ctrl-C
        _board = board
        if with_progress:
            kwargs = {**kwargs, "progress": _child_progress}
        try:
            answer = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - every exception goes to the parent
            answer = ("raise", _describe(exc))
        try:
            payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result is a bug: say so
            payload = pickle.dumps(
                ("raise", ("other", None, f"cannot send the result back: {exc!r}\n"))
            )
        view = memoryview(payload)
        while len(view):
            view = view[os.write(write_fd, view) :]
    except BaseException:  # noqa: BLE001 - the child must never return into the caller
        code = 70
    finally:
        os._exit(code)


def _describe(exc: BaseException) -> tuple:
    from demoset.errors import DemosetError

    if isinstance(exc, DemosetError):
        return ("demoset", type(exc).__name__, exc.message, exc.path, exc.h5path)
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.dumps(exc)
    except Exception:  # noqa: BLE001
        exc = None
    return ("other", exc, text)
