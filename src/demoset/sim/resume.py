"""The partial output of an extraction run, so an interrupted run can be resumed.

An extraction writes its demos into `<output>.partial`, an ordinary dataset appended to
through the journaled DatasetWriter: a run killed at any moment (SIGKILL, Ctrl-C, a full
disk, a crashed worker) leaves it holding every demo committed before, and nothing of the
demo under way. Beside it, `<output>.partial.json` records what the run was asked to do
(input file, demo list, options). `extract-obs --resume` checks that the new request is the
same, skips the demos the partial file already holds and appends the rest; when every demo
is in, the filter keys are written, the partial file is renamed to the output and the
record removed. The output therefore still appears complete under its name or not at all.

A resumed file holds the same arrays and attributes as an uninterrupted run: both go
through this module and the same writer, demo by demo; only the order in which demos were
appended can differ (HDF5 lists group members by name, so readers see no difference).

Why a separate record rather than attributes in the partial file: the finished file must
carry nothing an uninterrupted run would not, and the record must exist before the partial
file does (a run killed while creating it is then simply started again).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from demoset.errors import DemosetError, WriteError
from demoset.format import (
    DatasetWriter,
    journal_candidates,
    open_dataset,
    recover_if_abandoned,
)
from demoset.format import constants as C
from demoset.fsutil import atomic_output

PARTIAL_SUFFIX = ".partial"
RECORD_SUFFIX = ".partial.json"
RECORD_VERSION = 1


class PartialOutputError(WriteError):
    """A partial output is in the way, or does not match the run asked for."""


def partial_path(output: str | os.PathLike) -> str:
    """Where the demos of an unfinished run on `output` are kept."""
    return os.fspath(output) + PARTIAL_SUFFIX


def record_path(output: str | os.PathLike) -> str:
    """Where the request of an unfinished run on `output` is recorded."""
    return os.fspath(output) + RECORD_SUFFIX


def input_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies the input file: its absolute path, size and modification time."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_request(
    dataset: str | os.PathLike,
    demos: list[str],
    options: Any,
    exclude_next_obs: bool,
    compression: str | None,
    compression_level: int | None,
) -> dict[str, Any]:
    """The JSON-able description of an extraction run that a resumed run must match.

    `options` is the run's ExtractOptions (a dataclass); every field of it is recorded, so
    an option added later is compared without changes here.
    """
    from dataclasses import asdict

    settings = asdict(options)
    settings.pop("reuse_renderer", None)  # changes speed, not the output
    return {
        "input": input_fingerprint(dataset),
        "demos": list(demos),
        "options": settings,
        "exclude_next_obs": bool(exclude_next_obs),
        "compression": compression,
        "compression_level": compression_level,
    }


@dataclass
class PartialOutput:
    """An open partial output: the writer to append to and the demos it already holds."""

    output: str
    writer: DatasetWriter
    done: list[str] = field(default_factory=list)
    resumed: bool = False

    @property
    def path(self) -> str:
        return partial_path(self.output)

    @contextlib.contextmanager
    def removed_if_empty(self) -> Iterator[None]:
        """On an error before any demo was completed, remove the partial output again.

        There is nothing to resume then, and the next run should not be refused. Enter
        it before the writer, so the writer is closed when this runs.
        """
        try:
            yield
        except BaseException:
            if not self.done and not self.writer.demos:
                with contextlib.suppress(OSError):
                    remove_partial(self.output)
            raise

    def finish(self, overwrite: bool = False) -> None:
        """Close the writer, move the finished file to its name, remove the record."""
        self.writer.close()
        if os.path.exists(self.output) and not overwrite:
            raise WriteError(
                f"file exists; the finished extraction stays in {self.path} "
                "(move it, or rerun with --resume --overwrite)",
                self.output,
            )
        try:
            os.replace(self.path, self.output)
        except OSError as exc:
            raise WriteError(
                f"cannot move {self.path} into place ({exc.strerror})", self.output
            ) from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_path(self.output))
        _sync_dir(self.output)


def open_partial(
    output: str | os.PathLike,
    request: dict[str, Any],
    resume: bool = False,
    overwrite: bool = False,
    image_compression: str | None = None,
    compression_level: int | None = None,
) -> PartialOutput:
    """Start a new partial output for `request`, or reopen the one an interrupted run left.

    `request` is a JSON-able description of the run (input fingerprint, demo names,
    options); a partial output is only continued for an identical request. Without
    `resume` an existing partial output is refused (PartialOutputError, with the hint), or
    removed first when `overwrite` is set. An existing final output is refused unless
    `overwrite`.
    """
    output = os.fspath(output)
    partial = partial_path(output)
    record = record_path(output)
    if os.path.exists(output) and not overwrite:
        raise WriteError("file exists; pass overwrite=True (--overwrite) to replace it", output)
    writer_kwargs = {"image_compression": image_compression, "compression_level": compression_level}
    if os.path.exists(partial):
        if resume:
            _check_record(output, record, request)
            done = _demos_in(partial)
            unknown = sorted(set(done) - set(request.get("demos", [])), key=C.demo_sort_key)
            if unknown:
                raise PartialOutputError(
                    f"{partial} holds demos this run does not extract ({', '.join(unknown[:5])}); "
                    "use --overwrite to start over",
                    output,
                )
            writer = DatasetWriter(partial, mode="a", **writer_kwargs)
            return PartialOutput(output, writer, done=done, resumed=True)
        if not overwrite:
            raise PartialOutputError(
                f"an interrupted run left {os.path.basename(partial)}: add --resume to continue "
                "it, or --overwrite to start over",
                output,
            )
        remove_partial(output)
    _write_record(record, request)
    writer = DatasetWriter(partial, mode="w", overwrite=True, **writer_kwargs)
    return PartialOutput(output, writer)


def finished_earlier(output: str | os.PathLike, request: dict[str, Any]) -> bool:
    """True when a run of this very request already moved its finished file into place.

    A run killed between moving the finished file to its name and removing its record
    leaves the output complete beside a stale record. Resuming it has nothing left to do:
    the stale record is removed and the output kept as it is.
    """
    output = os.fspath(output)
    record = record_path(output)
    if not os.path.exists(output) or os.path.exists(partial_path(output)):
        return False
    if not os.path.exists(record):
        return False
    _check_record(output, record, request)
    os.unlink(record)
    _sync_dir(output)
    return True


def remove_partial(output: str | os.PathLike) -> None:
    """Delete the partial output of `output`, its record and any journal it left."""
    partial = partial_path(output)
    if os.path.exists(partial):
        for journal in journal_candidates(partial):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(journal)
        os.unlink(partial)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(output))


# ---------------------------------------------------------------------------- helpers
def _write_record(record: str, request: dict[str, Any]) -> None:
    body = json.dumps({"version": RECORD_VERSION, "request": request}, indent=1, sort_keys=True)
    try:
        with atomic_output(record, suffix=".tmp") as tmp:
            with open(tmp, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        raise WriteError(f"cannot record the run ({exc.strerror or exc})", record) from None


def _check_record(output: str, record: str, request: dict[str, Any]) -> None:
    """Refuse to continue a partial output made for another input, demo list or options."""
    try:
        with open(record) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise PartialOutputError(
            f"{os.path.basename(partial_path(output))} has no record of the run that made it "
            f"({os.path.basename(record)} is missing); use --overwrite to start over",
            output,
        ) from None
    except (OSError, ValueError) as exc:
        raise PartialOutputError(
            f"cannot read {os.path.basename(record)} ({exc}); use --overwrite to start over",
            output,
        ) from None
    old = saved.get("request") if isinstance(saved, dict) else None
    if not isinstance(old, dict):
        raise PartialOutputError(
            f"{os.path.basename(record)} is not a run record; use --overwrite to start over",
            output,
        )
    old, new = _flat(old), _flat(json.loads(json.dumps(request)))  # tuples as JSON keeps them
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if differ:
        raise PartialOutputError(
            f"the interrupted run was started with another {', '.join(differ)}; resume with the "
            "same input and options, or use --overwrite to start over",
            output,
        )


def _flat(request: dict[str, Any]) -> dict[str, Any]:
    """Settings by the names a user knows: options by flag name, the input as "input file"."""
    out: dict[str, Any] = {}
    for key, value in request.items():
        if key == "options" and isinstance(value, dict):
            out.update(value)
        elif key == "input":
            out["input file"] = value
        else:
            out[key] = value
    return out


def _demos_in(partial: str) -> list[str]:
    """The complete demos of a partial output (after finishing or undoing a killed commit)."""
    try:
        recover_if_abandoned(partial)
        with open_dataset(partial) as df:  # passes the commit gate like any demoset reader
            names = list(df.demos)
    except DemosetError as exc:
        raise PartialOutputError(exc.message, partial) from None
    except OSError as exc:
        raise PartialOutputError(
            f"cannot read the partial output ({str(exc).splitlines()[0]}); use --overwrite "
            "to start over",
            partial,
        ) from None
    return C.sorted_demos(names)


def _sync_dir(path: str) -> None:
    """Make a rename in `path`'s directory durable."""
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
