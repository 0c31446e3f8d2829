"""Public robomimic and MOMART dataset releases, and a resumable downloader.

The registry lists what robomimic 0.3.0 lists (`robomimic.DATASET_REGISTRY` and
`MOMART_DATASET_REGISTRY`): for robomimic, task / dataset type / hdf5 type with the URL
and the evaluation rollout horizon; for MOMART, task / dataset type with the URL and the
approximate size in GB. Image datasets have no public file (robomimic makes them from the
raw file by re-rendering states); their entries have `url=None`.

The downloader writes to `<name>.part` beside the destination, resumes a partial file
with an HTTP Range request, retries a dropped connection from where it stopped, checks
the size against what the server announced (and an expected size when given), and
renames the part file to its final name only when it is complete. So the final name
holds a complete file or nothing.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from demoset.errors import DownloadError

ROBOMIMIC_BASE = "http://downloads.cs.stanford.edu/downloads/rt_benchmark"
MOMART_BASE = "http://downloads.cs.stanford.edu/downloads/rt_mm"

SIM_TASKS = ["lift", "can", "square", "transport", "tool_hang"]
REAL_TASKS = ["lift_real", "can_real", "tool_hang_real"]
ROBOMIMIC_TASKS = SIM_TASKS + REAL_TASKS
ROBOMIMIC_DATASET_TYPES = ["ph", "mh", "mg", "paired"]
HDF5_TYPES = [
    "raw",
    "low_dim",
    "image",
    "low_dim_sparse",
    "low_dim_dense",
    "image_sparse",
    "image_dense",
]
MOMART_TASKS = [
    "table_setup_from_dishwasher",
    "table_setup_from_dresser",
    "table_cleanup_to_dishwasher",
    "table_cleanup_to_sink",
    "unload_dishwasher",
]
MOMART_DATASET_TYPES = ["expert", "suboptimal", "generalize", "sample"]

_PH_HORIZONS = {
    "lift": 400,
    "can": 400,
    "square": 400,
    "transport": 700,
    "tool_hang": 700,
    "lift_real": 1000,
    "can_real": 1000,
    "tool_hang_real": 1000,
}
_MH_HORIZONS = {"lift": 500, "can": 500, "square": 500, "transport": 1100}
_MG_HORIZONS = {"lift": 400, "can": 400}
_MOMART_SIZES_GB = {  # expert, suboptimal, generalize, sample
    "table_setup_from_dishwasher": (14, 14, 3.3, 0.6),
    "table_setup_from_dresser": (16, 17, 3.1, 0.7),
    "table_cleanup_to_dishwasher": (23, 36, 5.3, 1.1),
    "table_cleanup_to_sink": (17, 28, 2.9, 0.8),
    "unload_dishwasher": (21, 27, 5.4, 1.0),
}


@dataclass(frozen=True)
class Release:
    """One public dataset file."""

    family: str
    """"robomimic" or "momart"."""
    task: str
    dataset_type: str
    hdf5_type: str | None
    url: str | None
    """None when there is no public file (image datasets: make them from the raw file)."""
    horizon: int | None = None
    """Evaluation rollout horizon robomimic uses with this dataset."""
    size_gb: float | None = None
    """Approximate size (MOMART only; robomimic does not list sizes)."""

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None

    def destination(self, base_dir: str | os.PathLike) -> str | None:
        """`<base_dir>/<task>/<dataset_type>/<file>`, the layout robomimic's scripts use."""
        if not self.url:
            return None
        return os.path.join(os.fspath(base_dir), self.task, self.dataset_type, self.filename)


def _robomimic_releases() -> list[Release]:
    out: list[Release] = []

    def add(task, dtype, htype, filename, horizon):
        url = f"{ROBOMIMIC_BASE}/{task}/{dtype}/{filename}" if filename else None
        out.append(Release("robomimic", task, dtype, htype, url, horizon))

    for task, horizon in _PH_HORIZONS.items():
        real = task.endswith("_real")
        add(task, "ph", "raw", "demo.hdf5" if real else "demo_v141.hdf5", horizon)
        if not real:
            add(task, "ph", "low_dim", "low_dim_v141.hdf5", horizon)
            add(task, "ph", "image", None, horizon)
    for task, horizon in _MH_HORIZONS.items():
        add(task, "mh", "raw", "demo_v141.hdf5", horizon)
        add(task, "mh", "low_dim", "low_dim_v141.hdf5", horizon)
        add(task, "mh", "image", None, horizon)
    for task, horizon in _MG_HORIZONS.items():
        add(task, "mg", "raw", "demo_v141.hdf5", horizon)
        for htype in ("low_dim_sparse", "image_sparse", "low_dim_dense", "image_dense"):
            add(task, "mg", htype, f"{htype}_v141.hdf5", horizon)
    add("can", "paired", "raw", "demo_v141.hdf5", 400)
    add("can", "paired", "low_dim", "low_dim_v141.hdf5", 400)
    add("can", "paired", "image", None, 400)
    return out


def _momart_releases() -> list[Release]:
    out = []
    for task, sizes in _MOMART_SIZES_GB.items():
        for dtype, size in zip(MOMART_DATASET_TYPES, sizes):
            url = f"{MOMART_BASE}/{dtype}/{task}_{dtype}.hdf5"
            out.append(Release("momart", task, dtype, None, url, size_gb=float(size)))
    return out


ROBOMIMIC_RELEASES: list[Release] = _robomimic_releases()
MOMART_RELEASES: list[Release] = _momart_releases()
RELEASES: list[Release] = ROBOMIMIC_RELEASES + MOMART_RELEASES


def expand_tasks(tasks: Iterable[str]) -> list[str]:
    """Task names with robomimic's group words: all, sim, real; and momart (all MOMART tasks)."""
    out: list[str] = []
    for task in tasks:
        group = {
            "all": ROBOMIMIC_TASKS,
            "sim": SIM_TASKS,
            "real": REAL_TASKS,
            "momart": MOMART_TASKS,
        }.get(task, [task])
        out += [t for t in group if t not in out]
    return out


def find_releases(
    tasks: Iterable[str] = ("lift",),
    dataset_types: Iterable[str] | None = None,
    hdf5_types: Iterable[str] | None = ("low_dim",),
) -> list[Release]:
    """Releases matching the selection, in registry order.

    `dataset_types` None means "ph" for robomimic tasks and "expert" for MOMART tasks;
    "all" selects every type, likewise for `hdf5_types` (ignored for MOMART, which has
    one file per task and type). Unknown names raise DownloadError listing the known ones.
    """
    tasks = expand_tasks(tasks)
    known_tasks = set(ROBOMIMIC_TASKS) | set(MOMART_TASKS)
    unknown = [t for t in tasks if t not in known_tasks]
    if unknown:
        raise DownloadError(
            f"unknown task {unknown[0]!r}; known: {', '.join(ROBOMIMIC_TASKS + MOMART_TASKS)} "
            "(or all, sim, real, momart)"
        )
    types = None if dataset_types is None else list(dataset_types)
    if types is not None and "all" not in types:
        bad = [t for t in types if t not in ROBOMIMIC_DATASET_TYPES + MOMART_DATASET_TYPES]
        if bad:
            raise DownloadError(
                f"unknown dataset type {bad[0]!r}; known: {', '.join(ROBOMIMIC_DATASET_TYPES + MOMART_DATASET_TYPES)}"
            )
    htypes = None if hdf5_types is None else list(hdf5_types)
    if htypes is not None and "all" not in htypes:
        bad = [t for t in htypes if t not in HDF5_TYPES]
        if bad:
            raise DownloadError(f"unknown hdf5 type {bad[0]!r}; known: {', '.join(HDF5_TYPES)}")
    out = []
    for rel in RELEASES:
        if rel.task not in tasks:
            continue
        wanted_types = (
            types if types is not None else (["expert"] if rel.family == "momart" else ["ph"])
        )
        if "all" not in wanted_types and rel.dataset_type not in wanted_types:
            continue
        if (
            rel.family == "robomimic"
            and htypes is not None
            and "all" not in htypes
            and rel.hdf5_type not in htypes
        ):
            continue
        out.append(rel)
    return out


# --------------------------------------------------------------------------- downloading
@dataclass
class DownloadResult:
    path: str
    size: int
    resumed_from: int
    """Bytes already in the .part file when this call started."""
    attempts: int


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
)


def part_path(dest: str | os.PathLike) -> str:
    return os.fspath(dest) + ".part"


def download_file(
    url: str,
    dest: str | os.PathLike,
    expected_size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    retries: int = 5,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    overwrite: bool = False,
) -> DownloadResult:
    """Download `url` to `dest`, resuming `dest.part` and retrying dropped connections.

    Raises DownloadError (one line, naming `dest`) when the server refuses, the size
    differs from `expected_size` or from what the server announced, or the connection
    keeps failing after `retries` further attempts; the part file is kept so that a later
    call resumes it.
    """
    dest = os.fspath(dest)
    if not re.match(r"^https?://", url or ""):
        raise DownloadError(f"only http:// and https:// URLs can be downloaded, not {url!r}", dest)
    if os.path.exists(dest) and not overwrite:
        raise DownloadError(
            "already exists; pass overwrite=True (--overwrite) to download again", dest
        )
    directory = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create directory {directory} ({exc.strerror or exc})", dest
        ) from None
    part = part_path(dest)
    resumed_from = os.path.getsize(part) if os.path.exists(part) else 0
    total: int | None = None
    attempts = 0
    last_error = ""
    while True:
        attempts += 1
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        if total is not None and offset == total:
            break
        try:
            total, complete = _fetch(
                url, part, offset, expected_size, progress, timeout, chunk_size, dest
            )
        except _NETWORK_ERRORS as exc:
            if isinstance(exc, urllib.error.HTTPError):
                raise DownloadError(
                    f"server answered HTTP {exc.code} {exc.reason} for {url}", dest
                ) from None
            last_error = _describe(exc)
            complete = False
        except OSError as exc:
            if isinstance(exc, (ConnectionError, socket.timeout)):
                last_error = _describe(exc)
                complete = False
            else:
                raise DownloadError(f"cannot write {part} ({exc.strerror or exc})", dest) from None
        if complete:
            break
        if attempts > retries:
            have = os.path.getsize(part) if os.path.exists(part) else 0
            raise DownloadError(
                f"download interrupted ({last_error or 'connection closed early'}) after {attempts} attempts; "
                f"{have} bytes kept in {os.path.basename(part)}, run again to resume",
                dest,
            )
        if retry_wait > 0:
            time.sleep(min(retry_wait * attempts, 30.0))

    size = os.path.getsize(part)
    if expected_size is not None and size != expected_size:
        raise DownloadError(
            f"downloaded {size} bytes but {expected_size} were expected; refused", dest
        )
    os.replace(part, dest)
    return DownloadResult(path=dest, size=size, resumed_from=resumed_from, attempts=attempts)


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason if reason is not None else exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _fetch(
    url, part, offset, expected_size, progress, timeout, chunk_size, dest
) -> tuple[int | None, bool]:
    """One request from byte `offset`; appends to `part`. Returns (total size, complete)."""
    request = urllib.request.Request(url, headers={"User-Agent": "demoset"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            match = re.match(r"bytes\s+\*/(\d+)", exc.headers.get("Content-Range", "") or "")
            if match and int(match.group(1)) == offset:
                _check_expected(offset, expected_size, dest)
                return offset, True
            os.unlink(part)  # the part file does not belong to this URL's file
            return None, False
        raise
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
            if not match or int(match.group(1)) != offset:
                raise DownloadError(
                    f"server sent an unexpected range ({response.headers.get('Content-Range')})",
                    dest,
                )
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:
            offset = 0  # the server ignored the Range header: start again
            total = length
            mode = "wb"
        if total is not None:
            _check_expected(total, expected_size, dest)
        done = offset
        with open(part, mode) as f:
            if progress is not None:
                progress(done, total)
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done > total:
        os.unlink(part)
        raise DownloadError(f"server sent {done} bytes for a {total}-byte file; refused", dest)
    return total, total is None or done == total


def _check_expected(total: int, expected_size: int | None, dest: str) -> None:
    if expected_size is not None and total != expected_size:
        raise DownloadError(
            f"the server's file is {total} bytes but {expected_size} were expected; refused", dest
        )


def download_release(
    release: Release,
    base_dir: str | os.PathLike,
    url: str | None = None,
    **kwargs,
) -> DownloadResult:
    """Download one registry release to `<base_dir>/<task>/<type>/<file>` (see download_file)."""
    url = url or release.url
    if not url:
        raise DownloadError(
            f"{release.task}/{release.dataset_type}/{release.hdf5_type} has no public file; "
            "download the raw file and extract image observations from its states"
        )
    dest = release.destination(base_dir) if release.url else None
    if dest is None:
        dest = os.path.join(
            os.fspath(base_dir), release.task, release.dataset_type, url.rsplit("/", 1)[-1]
        )
    return download_file(url, dest, **kwargs)
