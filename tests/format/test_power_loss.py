"""Power loss: every crash state a power cut allows opens to the previous commit or the next.

The kill tests (test_crash_safety.py) never lose what the kernel already holds. Here each
write is recorded at the file-system calls it makes (tests/format/powerloss.py), and
every state a power cut could leave is rebuilt from the trace: at each fsync, any subset
of the writes since the file's last fsync, torn into 512-byte sectors and reordered, and
any subset of the name changes since the directory's last fsync. Each state is then opened
the way a user would after the reboot (`open_dataset`, which finishes or undoes an
interrupted commit), validated, and compared array by array with what was written: it
must be one of the commits, and never older than the last one the program was told is
done (`add_demo`, a filter-key edit or `close` returned).

`DEMOSET_POWERLOSS_STATES` sets the number of states per crash point (default 64); the
slow test runs 400.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import shutil
import tempfile
from dataclasses import dataclass, field

import h5py
import numpy as np
import pytest

from demoset.edit import subset
from demoset.format import DatasetWriter, open_dataset, validate
from demoset.format.journal import pending_journal
from demoset.fsutil import atomic_output
from demoset.masks import create_filter_key

from tests.format.powerloss import (
    Recorder,
    build_state,
    check_trace_replays,
    crash_states,
    cuts,
    materialize,
    pieces,
)

ENV = {"env_name": "Lift", "type": 1, "env_kwargs": {}}
ABSENT = "absent"
STATES_PER_CUT = int(os.environ.get("DEMOSET_POWERLOSS_STATES", "64"))


def demo_arrays(i: int) -> dict[str, np.ndarray]:
    """Demo number i (flat names), the same every time: low-dim arrays and a small image."""
    rng = np.random.default_rng(500 + i)
    n = int(rng.integers(4, 40))
    eef = rng.standard_normal((n, 3)).astype(np.float32)
    image = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return {
        "actions": rng.uniform(-1, 1, (n, 4)),
        "rewards": rng.random(n),
        "dones": (np.arange(n) == n - 1).astype(np.int64),
        "states": rng.standard_normal((n, 6)),
        "obs/eef": eef,
        "obs/cam_image": image,
        "next_obs/eef": np.concatenate([eef[1:], eef[-1:]]),
        "next_obs/cam_image": np.concatenate([image[1:], image[-1:]]),
    }


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def add_demo(writer: DatasetWriter, i: int) -> None:
    a = demo_arrays(i)
    writer.add_demo(
        actions=a["actions"],
        rewards=a["rewards"],
        dones=a["dones"],
        states=a["states"],
        obs={"eef": a["obs/eef"], "cam_image": a["obs/cam_image"]},
        next_obs={"eef": a["next_obs/eef"], "cam_image": a["next_obs/cam_image"]},
        name=f"demo_{i}",
    )


def expected(demos: list[int], masks: dict[str, list[str]] | None = None) -> tuple:
    """The observation `observe` gives for a file holding `demos` and `masks`."""
    held = tuple((f"demo_{i}", digest(demo_arrays(i))) for i in demos)
    return held, tuple(sorted((k, tuple(v)) for k, v in (masks or {}).items()))


def observe(path: str, seen: dict) -> object:
    """Open `path` as a user would after the reboot; what it holds, or ABSENT.

    Raises AssertionError (with the reason) when it does not open, validate or read.
    Most crash states recover to the same bytes: `seen` keeps the verdict per content.
    """
    if not os.path.exists(path):
        return ABSENT
    try:
        with open_dataset(path) as df:  # finishes or undoes an interrupted commit
            listed = list(df.demos)
    except Exception as exc:  # noqa: BLE001 - any failure to open is the finding
        raise AssertionError(f"does not open: {type(exc).__name__}: {exc}") from None
    assert pending_journal(path) is None, "a journal is left after opening"
    with open(path, "rb") as f:
        content = hashlib.sha256(f.read()).hexdigest()
    if content not in seen:
        try:
            seen[content] = _read_all(path, listed)
        except AssertionError as exc:
            seen[content] = exc
    if isinstance(seen[content], AssertionError):
        raise seen[content]
    return seen[content]


def _read_all(path: str, listed: list[str]) -> tuple:
    findings = [f for f in validate(path) if f.code != "no_demos"]
    assert not findings, [str(f) for f in findings]
    held = []
    with h5py.File(path, "r") as f:
        for demo in listed:
            arrays = {}
            f["data"][demo].visititems(
                lambda name, obj, arrays=arrays: (
                    arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
            held.append((demo, digest(arrays)))
        masks = {k: tuple(v.decode() for v in f["mask"][k][()]) for k in f.get("mask", {}).keys()}
    return tuple(held), tuple(sorted(masks.items()))


# ---------------------------------------------------------------------------- commit kinds
@dataclass
class Kind:
    """A write to record: `setup` makes the starting files, `run` the write itself.

    `outcomes[k]` is what the file holds after the k-th commit; `run` marks "ack <k>" when
    the program has been told commit k is done (from then on a crash must keep it).
    """

    name: str
    outcomes: list
    setup: object = None
    run: object = None
    observe: object = observe


def _append() -> Kind:
    def setup(path):
        with DatasetWriter(path, env_meta=ENV) as w:
            for i in range(3):
                add_demo(w, i)

    def run(path, rec):
        w = DatasetWriter(path, mode="a")
        add_demo(w, 3)
        rec.mark("ack 1")
        add_demo(w, 4)
        rec.mark("ack 2")
        w.close()

    return Kind(
        "append",
        [expected([0, 1, 2]), expected([0, 1, 2, 3]), expected([0, 1, 2, 3, 4])],
        setup,
        run,
    )


def _filter_key() -> Kind:
    before = {"train": ["demo_0", "demo_1"]}
    first = {"train": ["demo_2", "demo_0"]}
    second = {**first, "valid": ["demo_1"]}

    def setup(path):
        with DatasetWriter(path, env_meta=ENV) as w:
            for i in range(3):
                add_demo(w, i)
            w.set_filter_key("train", before["train"])

    def run(path, rec):
        create_filter_key(path, "train", first["train"], overwrite=True)
        rec.mark("ack 1")
        create_filter_key(path, "valid", second["valid"])
        rec.mark("ack 2")

    return Kind(
        "filter_key",
        [expected([0, 1, 2], before), expected([0, 1, 2], first), expected([0, 1, 2], second)],
        setup,
        run,
    )


def _new_file() -> Kind:
    def run(path, rec):
        w = DatasetWriter(path, env_meta=ENV)
        rec.mark("ack 1")
        add_demo(w, 0)
        rec.mark("ack 2")
        add_demo(w, 1)
        rec.mark("ack 3")
        w.close()

    return Kind("new_file", [ABSENT, expected([]), expected([0]), expected([0, 1])], None, run)


def _overwrite() -> Kind:
    """`DatasetWriter(path, overwrite=True)` replacing a file that holds other demos."""

    def setup(path):
        with DatasetWriter(path, env_meta=ENV) as w:
            for i in range(5, 8):
                add_demo(w, i)

    def run(path, rec):
        w = DatasetWriter(path, env_meta=ENV, overwrite=True)
        rec.mark("ack 1")
        add_demo(w, 0)
        rec.mark("ack 2")
        w.close()

    return Kind("overwrite", [expected([5, 6, 7]), expected([]), expected([0])], setup, run)


def _new_file_atomic() -> Kind:
    def run(path, rec):
        w = DatasetWriter(path, env_meta=ENV, atomic=True)
        add_demo(w, 0)
        add_demo(w, 1)
        w.set_filter_key("train", ["demo_1"])
        w.close()
        rec.mark("ack 1")

    return Kind("new_file_atomic", [ABSENT, expected([0, 1], {"train": ["demo_1"]})], None, run)


def _subset() -> Kind:
    """`demoset subset`'s library call: a new file from a filter key of another file."""
    masks = {"train": ["demo_0", "demo_2"]}

    def setup(path):
        source = os.path.join(os.path.dirname(os.path.dirname(path)), "source.hdf5")
        with DatasetWriter(source, env_meta=ENV) as w:
            for i in range(4):
                add_demo(w, i)
            w.set_filter_key("train", masks["train"])

    def run(path, rec):
        source = os.path.join(os.path.dirname(os.path.dirname(path)), "source.hdf5")
        subset(source, path, filter_key="train")
        rec.mark("ack 1")

    return Kind("subset", [ABSENT, expected([0, 2], masks)], setup, run)


def _recovery() -> Kind:
    """The open that finishes a commit a power cut interrupted, itself cut at every fsync.

    The starting state is one a power cut leaves while an append copies its journal into
    place: the journal complete and named, every other sector of the copy on the disk.
    """

    def setup(path):
        with DatasetWriter(path, env_meta=ENV) as w:
            for i in range(3):
                add_demo(w, i)
        vault = os.path.join(os.path.dirname(os.path.dirname(path)), "vault_setup")
        rec = Recorder(os.path.dirname(path), vault)
        with rec:
            w = DatasetWriter(path, mode="a")
            add_demo(w, 3)
            w.close()
        first_dirsync = next(i for i, op in enumerate(rec.ops) if op[0] == "dirsync")
        data = rec.initial_names["demos.hdf5"]
        cut = next(c for c in cuts(rec) if c.index > first_dirsync and data in c.pending)
        half = pieces(cut.pending[data])[::2]
        materialize(rec, build_state(cut, "half copied", {data: half}, []))
        assert pending_journal(path) is not None

    def run(path, rec):
        with open_dataset(path):
            pass
        rec.mark("ack 0")

    return Kind("recovery", [expected([0, 1, 2, 3])], setup, run)


PAYLOAD = bytes(range(256)) * 40


def _observe_bytes(path: str, seen: dict) -> object:
    if not os.path.exists(path):
        return ABSENT
    with open(path, "rb") as f:
        return f.read()


def _atomic_output() -> Kind:
    """fsutil.atomic_output, the helper behind checkpoints, collected demos and videos."""

    def run(path, rec):
        with atomic_output(path) as tmp:
            fd = os.open(tmp, os.O_WRONLY)
            try:
                os.write(fd, PAYLOAD)
            finally:
                os.close(fd)
        rec.mark("ack 1")

    return Kind("atomic_output", [ABSENT, PAYLOAD], None, run, _observe_bytes)


KINDS = {
    k().name: k
    for k in (
        _append,
        _filter_key,
        _new_file,
        _new_file_atomic,
        _overwrite,
        _subset,
        _atomic_output,
        _recovery,
    )
}


# ---------------------------------------------------------------------------- the check
@dataclass
class Report:
    kind: str
    cuts: int = 0
    states: int = 0
    outcomes: dict = field(default_factory=dict)  # commit index -> states that opened to it
    failures: list = field(default_factory=list)


def record(kind: Kind, work, ignore_fsync=None) -> tuple[Recorder, str]:
    """Run `kind` once under the recorder; the trace, checked complete by replaying it."""
    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    path = str(data_dir / "demos.hdf5")
    if kind.setup is not None:
        kind.setup(path)
    rec = Recorder(str(data_dir), str(work / "vault"), ignore_fsync=ignore_fsync)
    with rec:
        kind.run(path, rec)
    check_trace_replays(rec)
    return rec, path


def explore(
    kind: Kind, work, per_cut: int, seed: int = 0, ignore_fsync=None, max_failures: int = 50
) -> Report:
    """Check the structural and up to `per_cut` sampled crash states of each crash point."""
    rec, path = record(kind, work, ignore_fsync)
    rng = random.Random(seed)
    report = Report(kind.name)
    verdicts: dict = {}
    for cut in cuts(rec):
        report.cuts += 1
        acked = max([int(m.split()[1]) for m in cut.marks if m.startswith("ack ")], default=0)
        for state in crash_states(cut, per_cut, rng):
            report.states += 1
            materialize(rec, state)
            try:
                seen = kind.observe(path, verdicts)
                if seen not in kind.outcomes:
                    raise AssertionError("holds something that was never committed")
                k = kind.outcomes.index(seen)
                if k < acked:
                    raise AssertionError(
                        f"lost commit {acked} (holds commit {k}) after it returned"
                    )
                report.outcomes[k] = report.outcomes.get(k, 0) + 1
            except AssertionError as exc:
                report.failures.append(
                    f"op {cut.index}/{len(rec.ops)} ({state.how}; marks {cut.marks}): {exc}"
                )
                if len(report.failures) >= max_failures:
                    return report
    return report


def assert_no_failures(report: Report) -> None:
    assert report.states > 0
    assert not report.failures, (
        f"{len(report.failures)} of {report.states} crash states broke:\n"
        + "\n".join(report.failures[:8])
    )


@pytest.fixture
def work(tmp_path):
    """Where the run is recorded and its crash states written: a RAM disk when there is one.

    Opening a state with a journal fsyncs (recovery), which a busy shared disk makes slow;
    the model, not the disk under it, decides what a power cut keeps.
    """
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = tempfile.mkdtemp(prefix="demoset-powerloss-", dir=shm)
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_power_cut_state_opens_to_a_commit(work, kind):
    report = explore(KINDS[kind](), work, STATES_PER_CUT)
    assert_no_failures(report)
    # the states reached every commit of the run, not only the old file
    assert sorted(report.outcomes) == list(range(len(KINDS[kind]().outcomes))), report.outcomes


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_power_cut_states_thorough(work, kind):
    per_cut = int(os.environ.get("DEMOSET_POWERLOSS_STATES", "400"))
    for seed in range(3):
        report = explore(KINDS[kind](), work / f"seed{seed}", per_cut, seed=seed)
        assert_no_failures(report)


DROPPED = {
    "journal fsync": lambda name: name.endswith(".demoset-journal"),
    "data file fsyncs": lambda name: name == "demos.hdf5",
    "directory fsyncs": lambda name: name == ".",
}


@pytest.mark.parametrize("dropped", sorted(DROPPED))
def test_the_checker_catches_a_dropped_fsync(work, dropped):
    """The checker can fail: the same append with one kind of fsync forgotten must break."""
    report = explore(KINDS["append"](), work, 12, ignore_fsync=DROPPED[dropped], max_failures=1)
    assert report.failures, f"no crash state broke with the {dropped} dropped"
