"""DatasetWriter: create a robomimic-layout file and append demos to it safely.

Safety rules, each checked by tests (tests/format/test_crash_safety.py, test_power_loss.py,
test_disk_full.py, test_concurrency.py):
- Shapes and lengths are checked before anything is written.
- Appending (mode "a", and mode "w" without `atomic`) writes through a `JournaledFile`
  (format/journal.py): bytes HDF5 would change in place go to a journal first, and each
  `add_demo` ends with one all-or-nothing commit. A process killed at any moment leaves the
  file as it was after the last complete demo (or, if the kill hit the commit itself, a
  journal that the next open applies). Mode "w" builds the empty file beside the target
  and moves it into place, so a half-created file never appears under the name.
- A demo is still written under `/demoset_staging/` and moved under `/data/` when all of
  its arrays are in, so even a file written without the journal never shows half a demo.
- A failed write (full disk, read-only place) leaves the file at its last commit and
  closes the writer with a one-line WriteError.
- `atomic=True` writes to a hidden temporary file beside the target and renames it into
  place on `close()`: the output is complete under its final name or absent.
- Readers may open the file between commits: a commit waits (up to `lock_timeout`) for
  readers holding HDF5's shared lock and shuts out new ones while it copies the journal.
  `swmr=True` (follow mode) is kept for readers' sake; every journaled writer lets them
  in. A writer lock refuses a second demoset writer on the same file.

Next observations: with `derive_next_obs=True`, `next_obs[t] = obs[t + 1]` and the last
step's next observation is `final_obs` when given, else a repeat of the last observation.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from demoset.errors import DemosetError, LayoutError, WriteError
from demoset.format import constants as C
from demoset.format.compression import CODECS, Compression, parse_compression
from demoset.format.env_meta import EnvMeta, env_meta_from_dict
from demoset.format.journal import GuardedFile, JournaledFile, recover
from demoset.format.locking import WriterLock
from demoset.format.stored_stats import stats_of_arrays, write_demo_stats
from demoset.fsutil import fsync_dir, is_enospc, replace_durably, temp_path_beside

IMAGE_COMPRESSIONS = tuple(CODECS)


def compression_kwargs(name: str | None, level: int | None = None) -> dict[str, Any]:
    """h5py create_dataset filter keywords of an image compression name (no chunks)."""
    try:
        setting = parse_compression(name, level)
    except DemosetError as exc:
        raise WriteError(exc.message) from None
    return setting.filter_kwargs(np.uint8) if setting.enabled else {}


def derive_next_obs(
    obs: Mapping[str, np.ndarray], final_obs: Mapping[str, np.ndarray] | None = None
) -> dict:
    """next_obs[t] = obs[t+1]; the last step gets `final_obs[key]` or repeats obs[-1]."""
    out = {}
    for key, arr in obs.items():
        arr = np.asarray(arr)
        last = (
            arr[-1:]
            if final_obs is None or key not in final_obs
            else np.asarray(final_obs[key])[None]
        )
        out[key] = np.concatenate([arr[1:], last.astype(arr.dtype, copy=False)], axis=0)
    return out


def _as_env_meta(env_meta: EnvMeta | Mapping | str | None) -> EnvMeta | None:
    if env_meta is None or isinstance(env_meta, EnvMeta):
        return env_meta
    if isinstance(env_meta, str):
        env_meta = json.loads(env_meta)
    return env_meta_from_dict(dict(env_meta))


class DatasetWriter:
    """Writes demos into a robomimic-layout HDF5 file, one complete demo at a time.

    mode "w" creates a new file (refusing an existing one unless `overwrite`), mode "a"
    appends to an existing dataset, numbering new demos after the highest existing one.
    With `stats` (the default) each demo's statistics are stored with it in the same
    commit (demoset.format.stored_stats), so the loader normalises without a pass over
    the data.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        env_meta: EnvMeta | Mapping | str | None = None,
        mode: str = "w",
        overwrite: bool = False,
        atomic: bool = False,
        swmr: bool = False,
        image_compression: str | Compression | None = None,
        compression_level: int | None = None,
        data_attrs: Mapping[str, Any] | None = None,
        lock_timeout: float = 60.0,
        stats: bool = True,
    ):
        if mode not in ("w", "a"):
            raise ValueError("mode must be 'w' or 'a'")
        if atomic and mode == "a":
            raise ValueError("atomic=True writes a new file; it cannot be combined with mode='a'")
        self.path = os.fspath(path)
        self.env_meta = _as_env_meta(env_meta)
        self.mode = mode
        self.atomic = atomic
        self.swmr = swmr
        try:
            self.compression = parse_compression(image_compression, compression_level)
        except DemosetError as exc:
            raise WriteError(exc.message, self.path) from None
        self.image_compression = str(self.compression) if self.compression.enabled else None
        self.stats = stats
        self._closed = False
        self._h5: h5py.File | None = None
        self._lock: WriterLock | None = None
        self._jf: GuardedFile | None = None  # a JournaledFile unless atomic
        self.lock_timeout = lock_timeout
        self._total = 0
        self._next_index = 0
        self.demos: list[str] = []

        if mode == "w" and os.path.exists(self.path) and not overwrite:
            raise WriteError(
                "file exists; pass overwrite=True (--overwrite) to replace it", self.path
            )
        if mode == "a" and not os.path.exists(self.path):
            raise WriteError("no such file to append to", self.path)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise WriteError(f"directory {directory} does not exist", self.path)

        self._write_path = self.path
        if atomic:
            try:
                tmp = temp_path_beside(self.path)
            except OSError as exc:
                raise self._write_error(exc) from None
            self._write_path = tmp
        elif mode == "w" and not os.access(directory, os.W_OK):
            raise WriteError(f"directory {directory} is not writable", self.path)

        try:
            self._start(data_attrs)
        except BaseException:
            self._abort()
            raise

    # ------------------------------------------------------------------ lifecycle
    def _start(self, data_attrs: Mapping[str, Any] | None) -> None:
        if self.atomic:
            self._h5, self._jf = self._create_file(self._write_path, data_attrs)
            return
        if self.mode == "w":
            self._create_in_place(data_attrs)
        else:
            self._lock = WriterLock(self.path)
            self._lock.acquire()
            try:
                recover(self.path)  # finish or undo a commit a killed writer left behind
            except DemosetError as exc:
                raise WriteError(exc.message, self.path) from None
        self._h5 = self._open_journaled()
        if self.mode == "a":
            self._load_existing(data_attrs)

    def _create_file(
        self, path: str, data_attrs: Mapping[str, Any] | None
    ) -> tuple[h5py.File, GuardedFile]:
        """A new file holding only `data/` with total 0, env_args and `data_attrs`.

        It is written through a GuardedFile, so a full disk surfaces as an error here and
        never reaches HDF5 (which can crash on a failed write).
        """
        try:
            guard = GuardedFile(path, create=True)
        except OSError as exc:
            raise self._write_error(exc) from None
        h5 = None
        try:
            h5 = h5py.File(guard, "w")
            data = h5.create_group(C.DATA_GROUP)
            data.attrs[C.ATTR_TOTAL] = 0
            if self.env_meta is not None:
                data.attrs[C.ATTR_ENV_ARGS] = self.env_meta.to_json()
            for key, value in (data_attrs or {}).items():
                data.attrs[key] = value
            h5.flush()
            guard.raise_if_failed()
        except (OSError, RuntimeError, TypeError, ValueError) as exc:
            error = self._write_error(guard.error or exc)
            if h5 is not None:
                with contextlib.suppress(Exception):
                    h5.close()
            guard.close()
            raise error from None
        return h5, guard

    def _create_in_place(self, data_attrs: Mapping[str, Any] | None) -> None:
        """Create the empty dataset beside the target and move it into place in one step.

        A crash while creating therefore never leaves a half-made file under the name, and
        replacing an existing file is refused while another demoset writer appends to it.
        """
        try:
            tmp = temp_path_beside(self.path, suffix=".new")
        except OSError as exc:
            raise self._write_error(exc) from None
        try:
            h5, guard = self._create_file(tmp, data_attrs)
            h5.close()
            guard.sync()
            guard.close()
            lock = WriterLock(tmp)  # named by the inode, so it follows the file to its name
            lock.acquire()
            try:
                if os.path.exists(self.path):
                    with WriterLock(self.path):
                        os.replace(tmp, self.path)
                else:
                    try:
                        os.link(tmp, self.path)
                    except FileExistsError:
                        raise WriteError(
                            "file exists; pass overwrite=True (--overwrite) to replace it",
                            self.path,
                        ) from None
                    except OSError:  # a filesystem without hard links
                        os.replace(tmp, self.path)
                fsync_dir(self.path)  # the name too survives a power cut (test_power_loss.py)
            except BaseException:
                lock.release()
                raise
            self._lock = lock
        except OSError as exc:
            raise self._write_error(exc) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _open_journaled(self) -> h5py.File:
        """Open the target through a JournaledFile, so every commit is all-or-nothing."""
        try:
            jf = JournaledFile(self.path)
        except DemosetError as exc:
            raise WriteError(exc.message, self.path) from None
        except OSError as exc:
            raise self._write_error(exc) from None
        try:
            h5 = h5py.File(jf, "r+")
            jf.raise_if_failed()
        except Exception as exc:  # noqa: BLE001 - any failure to parse is one clear error
            jf.close()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WriteError(f"cannot open as HDF5 for appending ({first})", self.path) from None
        self._jf = jf
        return h5

    def _load_existing(self, data_attrs: Mapping[str, Any] | None) -> None:
        h5 = self._h5
        if C.DATA_GROUP not in h5 or not isinstance(h5[C.DATA_GROUP], h5py.Group):
            raise LayoutError("no 'data' group: not a robomimic-layout dataset", self.path, "/data")
        data = h5[C.DATA_GROUP]
        try:
            if self.env_meta is not None and C.ATTR_ENV_ARGS not in data.attrs:
                data.attrs[C.ATTR_ENV_ARGS] = self.env_meta.to_json()
            for key, value in (data_attrs or {}).items():
                data.attrs[key] = value
        except (OSError, TypeError, ValueError) as exc:
            raise self._failure(exc) from None
        existing = C.sorted_demos(data.keys())
        self._total = 0
        for d in existing:
            num = data[d].attrs.get(C.ATTR_NUM_SAMPLES, 0) if isinstance(data[d], h5py.Group) else 0
            try:
                self._total += int(np.asarray(num).reshape(-1)[0]) if np.size(num) else 0
            except (TypeError, ValueError, OverflowError):
                pass
        numbers = [C.demo_sort_key(d)[2] for d in existing if C.demo_sort_key(d)[0] == 0]
        self._next_index = (max(numbers) + 1) if numbers else 0
        self._commit()

    def _commit(self) -> None:
        """Flush and make everything written so far durable and visible, all at once."""
        try:
            self._h5.flush()
            if isinstance(self._jf, JournaledFile):
                self._jf.commit(self.lock_timeout)
            elif self._jf is not None:
                self._jf.raise_if_failed()
        except (DemosetError, OSError) as exc:
            raise self._failure(exc) from None

    def _write_error(self, exc: BaseException) -> WriteError:
        if is_enospc(exc):
            kept = (
                "nothing was written under this name"
                if self.atomic
                else "the file keeps every demo completed before"
            )
            return WriteError(f"no space left on device; {kept}", self.path)
        text = str(exc)
        if getattr(exc, "errno", None) == errno.EROFS or "Read-only file system" in text:
            return WriteError("read-only file system", self.path)
        if isinstance(exc, PermissionError) or "Permission denied" in text or "errno = 13" in text:
            return WriteError("permission denied (read-only place?)", self.path)
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return WriteError(f"write failed ({first})", self.path)

    def _failure(self, exc: BaseException) -> WriteError:
        """The WriteError for a failed write, after leaving the file at its last commit.

        An I/O error met inside HDF5's own writes (full disk) is named rather than the
        HDF5 error it later caused.
        """
        if self._jf is not None and self._jf.error is not None:
            exc = self._jf.error
        err = (
            WriteError(exc.message, self.path)
            if isinstance(exc, DemosetError)
            else self._write_error(exc)
        )
        self._fail()
        return err

    def _fail(self) -> None:
        """After a failed write: leave the file exactly as at its last commit, and close."""
        if isinstance(self._jf, JournaledFile):
            self._jf.discard()
        self._abort()

    def _abort(self) -> None:
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:  # noqa: BLE001
                pass
            self._h5 = None
        if self._jf is not None:
            self._jf.close()  # drops whatever was not committed
            self._jf = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self.atomic and os.path.exists(self._write_path):
            os.unlink(self._write_path)
        self._closed = True

    def close(self) -> None:
        """Finish the file; with atomic=True, move it into place under its final name."""
        if self._closed:
            return
        try:
            if self._h5 is not None:
                self._h5.close()
                self._h5 = None
                if isinstance(self._jf, JournaledFile):
                    self._jf.commit(self.lock_timeout)
                elif self._jf is not None:
                    self._jf.sync()
            if self.atomic:
                replace_durably(self._write_path, self.path)
        except (OSError, DemosetError) as exc:
            raise self._failure(exc) from None
        finally:
            if self._jf is not None:
                self._jf.close()
                self._jf = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None
        self._closed = True

    def abort(self) -> None:
        """Give up: drop what was not committed; with atomic=True remove the unfinished output."""
        if isinstance(self._jf, JournaledFile):
            self._jf.discard()
        self._abort()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def total(self) -> int:
        return self._total

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_lengths(n: int, arrays: Mapping[str, np.ndarray], where: str) -> None:
        for key, arr in arrays.items():
            if arr.ndim == 0 or arr.shape[0] != n:
                got = "a scalar" if arr.ndim == 0 else f"length {arr.shape[0]}"
                raise WriteError(f"{where}{key} has {got}, expected {n} steps (length of actions)")

    def _prepare(
        self,
        actions,
        obs,
        next_obs,
        rewards,
        dones,
        states,
        action_dict,
        derive_next,
        final_obs,
    ) -> dict[str, np.ndarray]:
        actions = np.asarray(actions)
        if actions.ndim == 1:
            actions = actions[:, None]
        if actions.ndim != 2:
            raise WriteError(f"actions must be (N, A), got shape {actions.shape}")
        n = actions.shape[0]
        if n == 0:
            raise WriteError("a demo needs at least one step")
        arrays: dict[str, np.ndarray] = {C.ACTIONS: actions}
        arrays[C.REWARDS] = (
            np.zeros(n, dtype=np.float64) if rewards is None else np.asarray(rewards)
        )
        if dones is None:
            dones = np.zeros(n, dtype=np.int64)
            dones[-1] = 1
        arrays[C.DONES] = np.asarray(dones)
        for key in (C.REWARDS, C.DONES):
            if arrays[key].ndim != 1:
                raise WriteError(f"{key} must be (N,), got shape {arrays[key].shape}")
        if states is not None:
            states = np.asarray(states)
            if states.size == 0:
                states = np.zeros((n, 0), dtype=np.float64)
            arrays[C.STATES] = states
        self._check_lengths(n, {k: v for k, v in arrays.items()}, "")
        obs = {k: np.asarray(v) for k, v in (obs or {}).items()}
        self._check_lengths(n, obs, "obs/")
        if derive_next:
            if next_obs is not None:
                raise WriteError("give next_obs or derive_next_obs=True, not both")
            next_obs = derive_next_obs(obs, final_obs)
        next_obs = {k: np.asarray(v) for k, v in (next_obs or {}).items()}
        if next_obs:
            if set(next_obs) != set(obs):
                raise WriteError(
                    f"next_obs keys {sorted(next_obs)} differ from obs keys {sorted(obs)}"
                )
            for key, arr in next_obs.items():
                if arr.shape[1:] != obs[key].shape[1:]:
                    raise WriteError(
                        f"next_obs/{key} shape {arr.shape[1:]} differs from obs {obs[key].shape[1:]}"
                    )
            self._check_lengths(n, next_obs, "next_obs/")
        action_dict = {k: np.asarray(v) for k, v in (action_dict or {}).items()}
        self._check_lengths(n, action_dict, "action_dict/")
        for key, arr in obs.items():
            arrays[f"{C.OBS}/{key}"] = arr
        for key, arr in next_obs.items():
            arrays[f"{C.NEXT_OBS}/{key}"] = arr
        for key, arr in action_dict.items():
            arrays[f"{C.ACTION_DICT}/{key}"] = arr
        for key, arr in arrays.items():
            if arr.dtype.kind not in "biuf":
                raise WriteError(f"{key} has dtype {arr.dtype}; arrays must be numeric")
        return arrays

    def _create(self, grp: h5py.Group, key: str, arr: np.ndarray) -> None:
        # compressed images: chunks of `compression.frames` frames of this demo (frames in
        # a row compress like video); uncompressed ones stay contiguous, one run of bytes
        # per demo for the loader
        kwargs = self.compression.dataset_kwargs(arr.shape[1:], arr.dtype, arr.shape[0])
        grp.create_dataset(key, data=arr, **kwargs)
        if self._jf is not None:
            self._jf.raise_if_failed()  # stop at the first failed write (full disk)

    # ------------------------------------------------------------------ writing
    def add_demo(
        self,
        actions,
        obs: Mapping[str, Any] | None = None,
        next_obs: Mapping[str, Any] | None = None,
        rewards=None,
        dones=None,
        states=None,
        model_file: str | None = None,
        action_dict: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        ep_meta: Mapping[str, Any] | str | None = None,
        derive_next_obs: bool = False,
        final_obs: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Append one demo and return its name (`demo_<k>`).

        rewards default to zeros and dones to 1 on the last step only. Nothing is written
        when a check fails.
        """
        if self._closed:
            raise WriteError("the writer is closed", self.path)
        arrays = self._prepare(
            actions, obs, next_obs, rewards, dones, states, action_dict, derive_next_obs, final_obs
        )
        n = int(arrays[C.ACTIONS].shape[0])
        demo = name or C.demo_name(self._next_index)
        self._commit_demo(demo, arrays, n, model_file, ep_meta, attrs)
        self.demos.append(demo)
        if name is None:
            self._next_index += 1
        else:
            key = C.demo_sort_key(name)
            if key[0] == 0 and key[1] == "demo_":
                self._next_index = max(self._next_index, key[2] + 1)
        return demo

    def _commit_demo(self, demo, arrays, n, model_file, ep_meta, attrs) -> None:
        h5 = self._h5
        if demo in h5[C.DATA_GROUP]:
            raise WriteError(f"demo {demo} already exists", self.path, f"/data/{demo}")
        try:
            staging = h5.require_group(C.STAGING_GROUP)
            if demo in staging:
                del staging[demo]
            grp = staging.create_group(demo)
            for key, arr in arrays.items():
                self._create(grp, key, arr)
            grp.attrs[C.ATTR_NUM_SAMPLES] = n
            if model_file is not None:
                grp.attrs[C.ATTR_MODEL_FILE] = model_file
            if ep_meta is not None:
                grp.attrs[C.ATTR_EP_META] = (
                    ep_meta if isinstance(ep_meta, str) else json.dumps(ep_meta)
                )
            for key, value in (attrs or {}).items():
                grp.attrs[key] = value
            if self.stats:  # in the same commit as the demo: both or neither
                write_demo_stats(h5, demo, stats_of_arrays(arrays, n))
            h5.flush()
            h5.move(f"/{C.STAGING_GROUP}/{demo}", f"/{C.DATA_GROUP}/{demo}")
            del h5[C.STAGING_GROUP]
            h5[C.DATA_GROUP].attrs[C.ATTR_TOTAL] = self._total + n
        except (OSError, TypeError, ValueError, RuntimeError, KeyError) as exc:
            raise self._failure(exc) from None
        self._commit()
        self._total += n

    def set_filter_key(self, name: str, demos: list[str]) -> None:
        """Write (or replace) filter key `mask/<name>` naming `demos`."""
        if self._closed:
            raise WriteError("the writer is closed", self.path)
        try:
            mask = self._h5.require_group(C.MASK_GROUP)
            if name in mask:
                del mask[name]
            mask.create_dataset(name, data=np.array([d.encode() for d in demos], dtype="S"))
        except (OSError, TypeError, ValueError, RuntimeError, KeyError) as exc:
            raise self._failure(exc) from None
        self._commit()

    def set_env_meta(self, env_meta: EnvMeta | Mapping | str) -> None:
        if self._closed:
            raise WriteError("the writer is closed", self.path)
        self.env_meta = _as_env_meta(env_meta)
        try:
            self._h5[C.DATA_GROUP].attrs[C.ATTR_ENV_ARGS] = self.env_meta.to_json()
        except (OSError, TypeError, ValueError, RuntimeError, KeyError) as exc:
            raise self._failure(exc) from None
        self._commit()
