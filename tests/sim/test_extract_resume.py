"""extract-obs --resume: runs killed at random moments continue to the same file.

Each run is a real `demoset extract-obs` process group killed with SIGKILL (no clean-up
code runs) or SIGINT (Ctrl-C), at random moments, and with SIGKILL once right after a demo
was committed; the resumed
result is compared array for array and attribute for attribute with an uninterrupted run.
A full disk (a real 2 MB tmpfs) is the other interruption: what completed is kept and
--resume finishes the file once there is room.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from demoset.errors import WriteError
from demoset.format import open_dataset
from demoset.sim.extract import extract_obs
from demoset.sim.resume import partial_path, record_path

from tests.sim.files_alike import assert_same_file

pytestmark = [pytest.mark.sim, pytest.mark.xdist_group("extract_cluster")]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "demoset.cli.main", "extract-obs", *args]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        cli(*args),
        start_new_session=True,  # its own process group, killed whole
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.communicate()


def demos_in_partial(output) -> int:
    path = partial_path(output)
    if not os.path.exists(path):
        return 0
    with open_dataset(path) as df:
        return len(df.demos)


def test_killed_runs_resume_to_the_file_an_uninterrupted_run_writes(small_scene, tmp_path):
    ref = tmp_path / "ref.hdf5"
    began = time.monotonic()
    done = subprocess.run(cli(small_scene, "--out", str(ref)), capture_output=True, text=True)
    full = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    with open_dataset(small_scene) as df:
        total = len(df.demos)

    out = tmp_path / "out.hdf5"
    seed = int(os.environ.get("DEMOSET_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    history = []
    # at random moments, from start-up to about the end of a run: SIGKILL, then Ctrl-C
    # (the second in the later half: start-up takes about half of a run)
    finished = False
    for sig, earliest in ((signal.SIGKILL, 0.05), (signal.SIGINT, 0.5)):
        proc = start(small_scene, "--out", str(out), "--resume")
        time.sleep(rng.uniform(earliest * full, full))
        kill_group(proc, sig)
        if proc.returncode == 0:  # a resumed run with few demos left ended before the signal
            finished = True
            break
        history.append(demos_in_partial(out))
        if out.exists():
            # killed after the finished file was moved into place: it is complete; if the
            # record was not removed yet, resuming only removes it (killed later still,
            # while the process was ending, nothing is left to resume)
            assert not os.path.exists(partial_path(out)), f"seed {seed}: output and partial"
            if os.path.exists(record_path(out)):
                again = subprocess.run(
                    cli(small_scene, "--out", str(out), "--resume"),
                    capture_output=True,
                    text=True,
                )
                assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
            finished = True
            break
    if finished:
        assert_same_file(ref, out)
        assert sorted(os.listdir(tmp_path)) == ["out.hdf5", "ref.hdf5"], "partial state left behind"
        print(f"seed {seed}: demos kept after each kill {history}; a resumed run finished")
        return

    # and once right after a demo was committed (polling the partial output, as a reader)
    before = demos_in_partial(out)
    if before < total - 1:
        proc = start(small_scene, "--out", str(out), "--resume")
        deadline = time.monotonic() + 2 * full
        while demos_in_partial(out) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_group(proc)
        history.append(demos_in_partial(out))
        assert history[-1] > before, f"seed {seed}: {history}"

    if os.path.exists(partial_path(out)):
        # without --resume an existing partial output is refused, with the hint, untouched
        size = os.path.getsize(partial_path(out))
        refused = subprocess.run(
            cli(small_scene, "--out", str(out)), capture_output=True, text=True
        )
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1
        assert "--resume" in refused.stderr and "--overwrite" in refused.stderr
        assert os.path.getsize(partial_path(out)) == size
        # another request (here other dones) is refused too
        other = subprocess.run(
            cli(small_scene, "--out", str(out), "--resume", "--done_mode", "2"),
            capture_output=True,
            text=True,
        )
        assert other.returncode == 2 and "done_mode" in other.stderr, other.stderr

    last = subprocess.run(
        cli(small_scene, "--out", str(out), "--resume"), capture_output=True, text=True
    )
    assert last.returncode == 0, f"seed {seed}: {last.stderr}"
    assert_same_file(ref, out)
    assert sorted(os.listdir(tmp_path)) == ["out.hdf5", "ref.hdf5"], "partial state left behind"
    print(f"seed {seed}: demos kept after each kill {history} of {total}")


def _mount_tmpfs(directory, size: str) -> None:
    directory.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")


def test_full_disk_keeps_the_completed_demos_for_resume(small_scene, small_reference, tmp_path):
    ref = small_reference
    size = os.path.getsize(ref)
    small = tmp_path / "small"
    _mount_tmpfs(small, str(size // 2))  # room for about half of the demos
    try:
        out = small / "out.hdf5"
        with pytest.raises(WriteError) as info:
            extract_obs(small_scene, out)
        assert "no space left on device" in str(info.value)
        kept = demos_in_partial(out)
        assert 0 < kept < 6, kept
        assert not out.exists() and os.path.exists(record_path(out))
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
        report = extract_obs(small_scene, out, resume=True)
        assert report.resumed_demos == kept and report.demos == 6 - kept
        assert_same_file(ref, out)
        assert sorted(os.listdir(small)) == ["out.hdf5"]
    finally:
        if subprocess.run(["umount", str(small)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_run_killed_after_moving_its_file_resumes_to_nothing_to_do(
    small_scene, small_reference, tmp_path, monkeypatch
):
    """The kill lands between the move into place and the record's removal."""
    import demoset.sim.resume as resume

    out = tmp_path / "out.hdf5"
    real_unlink = os.unlink

    def killed_at_the_record(path, *args, **kwargs):
        if os.fspath(path) == record_path(out):
            raise KeyboardInterrupt
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(resume.os, "unlink", killed_at_the_record)
    with pytest.raises(KeyboardInterrupt):
        extract_obs(small_scene, out, n=2)
    monkeypatch.setattr(resume.os, "unlink", real_unlink)
    assert out.exists() and os.path.exists(record_path(out))
    before = os.path.getmtime(out)

    # another request is still refused, naming what differs
    with pytest.raises(WriteError, match="done_mode"):
        extract_obs(small_scene, out, n=2, resume=True, done_mode=2)
    report = extract_obs(small_scene, out, n=2, resume=True)
    assert report.already_complete and report.demos == 0
    assert sorted(os.listdir(tmp_path)) == ["out.hdf5"]
    assert os.path.getmtime(out) == before
