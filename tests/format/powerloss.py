"""Power-loss crash states of a recorded file-system trace (the ALICE / CrashMonkey method).

A kill -9 never loses data the kernel already has; a power cut loses whatever was not yet
on the disk, and the disk may have written the rest in any order. This module turns one
recorded run of a demoset write into the states a power cut could leave:

1. `Recorder` logs, while a block runs, every creation, write, truncation, fsync, link,
   rename and unlink under one directory, at the `os` calls demoset's writers make (the
   journal, the writer and the temporary-file helpers all use `os.open` / `os.pwrite` /
   `os.write` / `os.fsync` ...; h5py writes through them via its `fileobj` driver). It
   wraps the `os` functions for the length of the block and forwards every call, so the
   real files are written as usual. `check_trace_replays` proves the log complete: the log
   replayed from the starting files must give the final files byte for byte.
2. `crash_states` walks the log. At each fsync (just before it completes) and at the end,
   every file's content is what its last completed fsync made durable plus any subset of
   its later writes, each write torn into 512-byte sectors that persist independently,
   applied in any order (so an older write may land over a newer one); a write past the
   end may persist only as a longer file of zeros. Names (creation, link, rename, unlink)
   are durable only after an fsync of the directory; before it any subset of them, in
   order, may have persisted. The states are enumerated structurally (nothing / everything
   / each file alone / all but each file, with and without the name changes) and then
   sampled with a seeded generator up to a budget per cut.
3. `materialize` writes a state into the directory, reusing the recorded files' own inodes
   (the journal names the data file by device and inode, as after a real reboot).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field

SECTOR = 512


@dataclass
class Cut:
    """The crash point just before the `index`-th operation (an fsync) completes."""

    index: int
    marks: list[str]  # labels the recorded program passed before this point
    durable: dict[int, bytes]  # inode -> content made durable by its last fsync
    pending: dict[int, list[tuple]]  # inode -> writes / truncations since then
    names: dict[str, int]  # directory as of its last fsync
    name_ops: list[tuple]  # creations, links, renames, unlinks since then


@dataclass
class State:
    cut: Cut
    how: str
    names: dict[str, int]
    contents: dict[int, bytes] = field(default_factory=dict)

    def key(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.names):
            h.update(name.encode() + b"\0")
            h.update(hashlib.sha256(self.contents[self.names[name]]).digest())
        return h.hexdigest()


class Recorder:
    """Log the file-system operations under `directory` while the `with` block runs.

    `vault` is a directory on the same file system; a hard link to every file is kept
    there, so each recorded inode can be rewritten later under its own identity.
    `ignore_fsync(name)` returning True makes the model forget an fsync of the file opened
    under `name` ("." for the directory); the call still happens. It is the way to check
    that the checker sees a broken protocol.
    """

    _WRAPPED = (
        "open",
        "close",
        "write",
        "pwrite",
        "lseek",
        "ftruncate",
        "fsync",
        "fdatasync",
        "unlink",
        "remove",
        "link",
        "rename",
        "replace",
    )

    def __init__(self, directory: str, vault: str, ignore_fsync=None):
        self.dir = os.path.abspath(directory)
        self.vault = os.path.abspath(vault)
        os.makedirs(self.vault, exist_ok=True)
        self.ops: list[tuple] = []
        self.ignore_fsync = ignore_fsync or (lambda name: False)
        self.names: dict[str, int] = {}
        self.initial: dict[int, bytes] = {}
        self.initial_names: dict[str, int] = {}
        self._fds: dict[int, list] = {}  # fd -> [inode, position, name] or ["dir"]
        self._next = 0
        self._real: dict[str, object] = {}
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if os.path.isfile(path) and not os.path.islink(path):
                ino = self._new_inode(path)
                with open(path, "rb") as f:
                    self.initial[ino] = f.read()
                self.names[name] = ino
        self.initial_names = dict(self.names)

    # ------------------------------------------------------------------ bookkeeping
    def _new_inode(self, path: str) -> int:
        ino = self._next
        self._next += 1
        self._real.get("link", os.link)(path, self.vault_path(ino))
        return ino

    def vault_path(self, ino: int) -> str:
        return os.path.join(self.vault, f"inode{ino}")

    def _name(self, path) -> str | None:
        if isinstance(path, int):
            return None
        path = os.path.abspath(os.fspath(path))
        return os.path.basename(path) if os.path.dirname(path) == self.dir else None

    def mark(self, label: str) -> None:
        """Note that the recorded program reached `label` (e.g. "add_demo returned")."""
        self.ops.append(("mark", label))

    # ------------------------------------------------------------------ wrappers
    def __enter__(self) -> Recorder:
        self._real = {name: getattr(os, name) for name in self._WRAPPED}
        for name in self._WRAPPED:
            setattr(os, name, getattr(self, f"_os_{name}"))
        return self

    def __exit__(self, *exc) -> None:
        for name, fn in self._real.items():
            setattr(os, name, fn)

    def _os_open(self, path, flags, mode=0o777, *, dir_fd=None):
        real = self._real["open"]
        if dir_fd is not None or isinstance(path, int):
            return real(path, flags, mode, dir_fd=dir_fd)
        full = os.path.abspath(os.fspath(path))
        name = self._name(full)
        existed = os.path.lexists(full) if name else True
        fd = real(path, flags, mode)
        if full == self.dir:
            self._fds[fd] = ["dir"]
        elif name is not None:
            if flags & os.O_APPEND:
                raise AssertionError("O_APPEND is not modelled")
            if not existed:
                ino = self._new_inode(full)
                self.names[name] = ino
                self.ops.append(("create", name, ino))
            else:
                ino = self.names[name]
                if flags & os.O_TRUNC:
                    self.ops.append(("trunc", ino, 0))
            self._fds[fd] = [ino, 0, name]
        return fd

    def _os_close(self, fd):
        self._fds.pop(fd, None)
        return self._real["close"](fd)

    def _os_lseek(self, fd, pos, how):
        out = self._real["lseek"](fd, pos, how)
        if fd in self._fds and self._fds[fd][0] != "dir":
            self._fds[fd][1] = out
        return out

    def _os_write(self, fd, data):
        n = self._real["write"](fd, data)
        entry = self._fds.get(fd)
        if entry is not None and entry[0] != "dir":
            chunk = bytes(memoryview(data).cast("B")[:n])
            self.ops.append(("write", entry[0], entry[1], chunk))
            entry[1] += n
        return n

    def _os_pwrite(self, fd, data, offset):
        n = self._real["pwrite"](fd, data, offset)
        entry = self._fds.get(fd)
        if entry is not None and entry[0] != "dir":
            self.ops.append(("write", entry[0], offset, bytes(memoryview(data).cast("B")[:n])))
        return n

    def _os_ftruncate(self, fd, size):
        out = self._real["ftruncate"](fd, size)
        entry = self._fds.get(fd)
        if entry is not None and entry[0] != "dir":
            self.ops.append(("trunc", entry[0], int(size)))
        return out

    def _sync(self, fd, real):
        out = real(fd)
        entry = self._fds.get(fd)
        if entry is not None:
            if entry[0] == "dir":
                if not self.ignore_fsync("."):
                    self.ops.append(("dirsync",))
            elif not self.ignore_fsync(entry[2]):
                self.ops.append(("fsync", entry[0]))
        return out

    def _os_fsync(self, fd):
        return self._sync(fd, self._real["fsync"])

    def _os_fdatasync(self, fd):
        return self._sync(fd, self._real["fdatasync"])

    def _os_unlink(self, path, *, dir_fd=None):
        out = self._real["unlink"](path, dir_fd=dir_fd)
        name = self._name(path) if dir_fd is None else None
        if name is not None and name in self.names:
            self.ops.append(("unlink", name))
            del self.names[name]
        return out

    def _os_remove(self, path, *, dir_fd=None):
        return self._os_unlink(path, dir_fd=dir_fd)

    def _os_link(self, src, dst, **kwargs):
        out = self._real["link"](src, dst, **kwargs)
        s, d = self._name(src), self._name(dst)
        if d is not None:
            if s is None or s not in self.names:
                raise AssertionError(f"link from outside the recorded directory: {src}")
            self.names[d] = self.names[s]
            self.ops.append(("link", d, self.names[s]))
        return out

    def _rename(self, real, src, dst, **kwargs):
        out = real(src, dst, **kwargs)
        s, d = self._name(src), self._name(dst)
        if s is not None and s in self.names:
            if d is None:
                raise AssertionError(f"rename out of the recorded directory: {dst}")
            self.names[d] = self.names.pop(s)
            self.ops.append(("rename", s, d))
        elif d is not None:
            raise AssertionError(f"rename into the recorded directory from {src}")
        return out

    def _os_rename(self, src, dst, **kwargs):
        return self._rename(self._real["rename"], src, dst, **kwargs)

    def _os_replace(self, src, dst, **kwargs):
        return self._rename(self._real["replace"], src, dst, **kwargs)


# ---------------------------------------------------------------------------- the model
def _apply_file_op(buf: bytearray, op: tuple) -> None:
    kind = op[0]
    if kind == "write":
        off, data = op[2], op[3]
        if len(buf) < off:
            buf.extend(bytes(off - len(buf)))
        buf[off : off + len(data)] = data
    elif kind == "trunc":
        size = op[2]
        if size < len(buf):
            del buf[size:]
        else:
            buf.extend(bytes(size - len(buf)))
    elif kind == "grow":  # only the larger size of an extending write persisted
        if len(buf) < op[2]:
            buf.extend(bytes(op[2] - len(buf)))


def _apply_name_op(names: dict[str, int], op: tuple) -> None:
    kind = op[0]
    if kind == "create":
        names[op[1]] = op[2]
    elif kind == "link":
        names[op[1]] = op[2]
    elif kind == "rename":
        if op[1] in names:
            names[op[2]] = names.pop(op[1])
    elif kind == "unlink":
        names.pop(op[1], None)


def replay(rec: Recorder) -> tuple[dict[str, int], dict[int, bytes]]:
    """Every recorded operation applied in order: the files as the program left them."""
    contents = {ino: bytearray(data) for ino, data in rec.initial.items()}
    names = dict(rec.initial_names)
    for op in rec.ops:
        if op[0] in ("write", "trunc"):
            _apply_file_op(contents.setdefault(op[1], bytearray()), op)
        elif op[0] in ("create", "link", "rename", "unlink"):
            if op[0] == "create":
                contents[op[2]] = bytearray()
            _apply_name_op(names, op)
    return names, {ino: bytes(buf) for ino, buf in contents.items()}


def check_trace_replays(rec: Recorder) -> None:
    """Fail unless the log, replayed, gives exactly the files the run left (nothing missed)."""
    names, contents = replay(rec)
    actual = sorted(n for n in os.listdir(rec.dir) if os.path.isfile(os.path.join(rec.dir, n)))
    assert sorted(names) == actual, (sorted(names), actual)
    for name, ino in names.items():
        with open(os.path.join(rec.dir, name), "rb") as f:
            assert f.read() == contents[ino], f"the trace misses writes to {name}"


def cuts(rec: Recorder) -> list[Cut]:
    """One cut before each fsync (of a file or the directory) completes, and one at the end."""
    cache = {ino: bytearray(data) for ino, data in rec.initial.items()}
    durable = {ino: bytes(data) for ino, data in rec.initial.items()}
    pending: dict[int, list[tuple]] = {}
    names = dict(rec.initial_names)
    name_ops: list[tuple] = []
    marks: list[str] = []
    out: list[Cut] = []

    def snapshot(index: int) -> Cut:
        return Cut(
            index,
            list(marks),
            dict(durable),
            {ino: list(ops) for ino, ops in pending.items() if ops},
            dict(names),
            list(name_ops),
        )

    for i, op in enumerate(rec.ops):
        kind = op[0]
        if kind == "mark":
            marks.append(op[1])
        elif kind in ("write", "trunc"):
            _apply_file_op(cache[op[1]], op)
            pending.setdefault(op[1], []).append(op)
        elif kind == "create":
            cache[op[2]] = bytearray()
            durable[op[2]] = b""
            name_ops.append(op)
        elif kind in ("link", "rename", "unlink"):
            name_ops.append(op)
        elif kind == "fsync":
            if pending.get(op[1]):
                out.append(snapshot(i))
            durable[op[1]] = bytes(cache[op[1]])
            pending[op[1]] = []
        elif kind == "dirsync":
            if name_ops:
                out.append(snapshot(i))
            for name_op in name_ops:
                _apply_name_op(names, name_op)
            name_ops = []
    out.append(snapshot(len(rec.ops)))
    return out


def pieces(ops: list[tuple]) -> list[tuple]:
    """Writes split at 512-byte sector boundaries, each extending write also as a size."""
    out: list[tuple] = []
    sizes: dict[int, int] = {}
    for op in ops:
        if op[0] != "write":
            out.append(op)
            continue
        ino, off, data = op[1], op[2], op[3]
        pos = off
        while pos < off + len(data):
            end = min((pos // SECTOR + 1) * SECTOR, off + len(data))
            out.append(("write", ino, pos, data[pos - off : end - off]))
            pos = end
        end = off + len(data)
        if end > sizes.get(ino, 0):
            sizes[ino] = end
            out.append(("grow", ino, end))
    return out


def build_state(cut: Cut, how: str, keep: dict[int, list[tuple]], name_keep: list[tuple]) -> State:
    names = dict(cut.names)
    for op in name_keep:
        _apply_name_op(names, op)
    contents = {}
    for ino in set(names.values()):
        buf = bytearray(cut.durable.get(ino, b""))
        for op in keep.get(ino, []):
            _apply_file_op(buf, op)
        contents[ino] = bytes(buf)
    return State(cut, how, names, contents)


def crash_states(cut: Cut, budget: int, rng: random.Random):
    """Distinct crash states of one cut: the structural ones first, then seeded samples."""
    split = {ino: pieces(ops) for ino, ops in cut.pending.items()}
    inodes = sorted(split)
    name_choices = (
        [("no names", []), ("all names", list(cut.name_ops))] if cut.name_ops else [("", [])]
    )
    seen: set[str] = set()
    produced = 0

    def emit(state: State):
        nonlocal produced
        key = state.key()
        if key in seen:
            return None
        seen.add(key)
        produced += 1
        return state

    structural = [("nothing", {}), ("everything", {i: split[i] for i in inodes})]
    for ino in inodes:
        structural.append((f"only inode{ino}", {ino: split[ino]}))
        structural.append((f"all but inode{ino}", {i: split[i] for i in inodes if i != ino}))
    for how, keep in structural:
        for name_how, name_keep in name_choices:
            state = emit(build_state(cut, f"{how}, {name_how}".strip(", "), keep, name_keep))
            if state is not None:
                yield state
            if produced >= budget:
                return
    attempts = 0
    while produced < budget and attempts < budget * 4:
        attempts += 1
        keep = {}
        for ino in inodes:
            p = rng.choice((0.05, 0.5, 0.95))
            chosen = [op for op in split[ino] if rng.random() < p]
            if rng.random() < 0.5:
                rng.shuffle(chosen)  # an older write may land after a newer one
            keep[ino] = chosen
        name_keep = [op for op in cut.name_ops if rng.random() < 0.5]
        state = emit(build_state(cut, f"sample {attempts}", keep, name_keep))
        if state is not None:
            yield state


def materialize(rec: Recorder, state: State) -> None:
    """Make the recorded directory hold exactly `state`, each file under its own inode."""
    for name in os.listdir(rec.dir):
        path = os.path.join(rec.dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for ino in set(state.names.values()):
        data = state.contents[ino]
        fd = os.open(rec.vault_path(ino), os.O_WRONLY)
        try:
            os.ftruncate(fd, len(data))
            view = memoryview(data)
            pos = 0
            while pos < len(data):
                pos += os.pwrite(fd, view[pos:], pos)
        finally:
            os.close(fd)
    for name, ino in state.names.items():
        with contextlib.suppress(FileExistsError):
            os.link(rec.vault_path(ino), os.path.join(rec.dir, name))
