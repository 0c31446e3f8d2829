"""The asset files (meshes, textures) of the robosuite version that recorded a demo.

A stored model XML names its meshes and textures by absolute paths inside the recording
machine's `robosuite/models/assets`. robosuite 1.5 moved and reorganised those files
(`mounts/` became `bases/`, robot meshes were renamed), so a scene recorded with robosuite
1.0-1.4 does not load against the installed package, and where a file of the same name
still exists its geometry may differ. To rebuild the scene as recorded, the paths are
pointed at that version's own assets instead:

1. the folder named by `DEMOSET_ROBOSUITE_ASSETS` (for machines without registry access:
   a `models/assets` folder, a folder holding `<version>/models/assets`, or an unpacked
   robosuite wheel or source tree);
2. the user cache, `$DEMOSET_CACHE_DIR/robosuite-assets/<version>/models/assets`
   (default `~/.cache/demoset`), filled once per version;
3. otherwise fetched into that cache with `pip download --no-deps robosuite==<version>`
   (never when `DEMOSET_NO_DOWNLOAD` is set).

A file missing at its recorded place inside those assets is matched by its file name when
exactly one asset has that name (robosuite 1.0 recordings name
`robots/panda/meshes/pedestal.stl`, which robosuite 1.0.0 ships as
`robots/common_meshes/pedestal.stl`). When nothing can be had, one line names the missing
file, the recording version and the way out.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from demoset.errors import SimulationError

ASSETS_ENV = "DEMOSET_ROBOSUITE_ASSETS"
"""A folder with the recording version's robosuite assets (offline machines)."""
CACHE_ENV = "DEMOSET_CACHE_DIR"
"""Where demoset keeps downloaded things (default ~/.cache/demoset)."""
VERSION_ENV = "DEMOSET_ROBOSUITE_VERSION"
"""The robosuite version that recorded a file which does not say so itself."""
NO_DOWNLOAD_ENV = "DEMOSET_NO_DOWNLOAD"
"""Set (to anything but empty or 0) to never ask the package registry for assets."""

_ASSETS_MARKER = ("robosuite", "models", "assets")
_SKIPPED_FOLDERS = ("bullet_data", "demonstrations")
"""Parts of models/assets no model XML names (pybullet's URDFs, example demos): not kept."""
_FILE_ELEMENTS = ("mesh", "texture", "hfield", "skin")
_VERSION_RE = re.compile(r"^\d+(\.\d+){0,2}([.-]?\w+)?$")


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """(major, minor, patch) of a version text such as "1.4.1", or None when it is not one."""
    if not text:
        return None
    text = str(text).strip()
    if not _VERSION_RE.match(text):
        return None
    numbers = re.findall(r"\d+", text)[:3]
    return tuple(int(n) for n in numbers) + (0,) * (3 - len(numbers))


def installed_robosuite_version() -> str:
    """The installed robosuite's version, read without importing robosuite."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robosuite")
    except PackageNotFoundError:
        return ""


def needs_own_assets(recorded: str | None, installed: str | None = None) -> bool:
    """Whether a recording of version `recorded` needs its own assets under `installed`.

    Within one minor series the asset files are the same; across series they moved, so a
    known older series always gets its own files (byte for byte what was recorded).
    """
    rec = parse_version(recorded)
    inst = parse_version(installed if installed is not None else installed_robosuite_version())
    if rec is None or inst is None:
        return False
    return rec[:2] != inst[:2]


def version_from_xml(xml: str) -> str | None:
    """A robosuite version named in the stored asset paths (e.g. `robosuite-1.2.0/...`)."""
    match = re.search(r"robosuite[-_](\d+\.\d+\.\d+)", xml)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------- where assets are
def cache_root() -> Path:
    """The user cache for demoset downloads."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "demoset"
    )
    return Path(base)


def cached_assets_dir(version: str) -> Path:
    """Where robosuite `version`'s assets are kept in the user cache."""
    return cache_root() / "robosuite-assets" / version / "models" / "assets"


def _assets_in(folder: Path, version: str) -> Path | None:
    """The assets root inside a folder given by the user, for `version`, if there is one."""
    for candidate in (
        folder / version / "models" / "assets",
        folder / version / "robosuite" / "models" / "assets",
        folder / "robosuite" / "models" / "assets",
        folder / "models" / "assets",
        folder,
    ):
        if (candidate / "robots").is_dir():
            return candidate
    return None


def _downloads_allowed() -> bool:
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip() in ("", "0")


def fetch_assets(version: str) -> Path:
    """Download robosuite `version` from the package registry and cache its models/assets.

    Uses `pip download --no-deps` (a wheel, or the source archive for releases without
    one) and keeps only `robosuite/models/assets`. Returns the cached assets folder.
    """
    if parse_version(version) is None:
        raise SimulationError(f"not a robosuite version: {version!r}")
    target = cached_assets_dir(version)
    if (target / "robots").is_dir():
        return target
    with tempfile.TemporaryDirectory(prefix="demoset-robosuite-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp]
        cmd.append(f"robosuite=={version}")
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if done.returncode != 0 or not archives:
            last = (done.stderr or done.stdout or "").strip().splitlines()
            reason = last[-1] if last else f"pip exited with {done.returncode}"
            raise SimulationError(f"pip download robosuite=={version} failed: {reason}")
        staging = Path(tempfile.mkdtemp(prefix=".assets-", dir=_ensure_dir(target.parent.parent)))
        try:
            _extract_assets(archives[0], staging / "models" / "assets")
            if not (staging / "models" / "assets" / "robots").is_dir():
                raise SimulationError(
                    f"robosuite {version}'s package has no models/assets folder ({archives[0].name})"
                )
            os.replace(staging / "models", target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _extract_assets(archive: Path, dest: Path) -> None:
    """Copy the members under `robosuite/models/assets/` of a wheel or sdist into `dest`.

    Only regular files with plain relative names are written (an archive is untrusted).
    """

    def relative(name: str) -> str | None:
        parts = name.replace("\\", "/").split("/")
        for i in range(len(parts) - 3):
            if tuple(parts[i : i + 3]) == _ASSETS_MARKER:
                rest = parts[i + 3 :]
                if not rest or rest[0] in _SKIPPED_FOLDERS:
                    return None
                if rest and all(p not in ("", ".", "..") for p in rest):
                    return "/".join(rest)
        return None

    def write(rel: str, data: bytes) -> None:
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = relative(info.filename)
                if rel and not info.is_dir():
                    write(rel, zf.read(info))
        return
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            rel = relative(member.name)
            if rel and member.isfile():
                handle = tf.extractfile(member)
                if handle is not None:
                    write(rel, handle.read())


def assets_dir(version: str, download: bool | None = None) -> Path:
    """robosuite `version`'s assets: the offline folder, the cache, or a fresh download."""
    offline = os.environ.get(ASSETS_ENV)
    if offline:
        found = _assets_in(Path(offline).expanduser(), version)
        if found is None:
            raise SimulationError(
                f"{ASSETS_ENV}={offline} has no robosuite assets (expected a models/assets "
                f"folder with robots/ inside, for robosuite {version})"
            )
        return found
    cached = cached_assets_dir(version)
    if (cached / "robots").is_dir():
        return cached
    if download is None:
        download = _downloads_allowed()
    if not download:
        raise SimulationError(
            f"the demo was recorded with robosuite {version}, whose asset files are not "
            f"cached ({cached}) and downloads are off ({NO_DOWNLOAD_ENV}); set {ASSETS_ENV} "
            f"to robosuite {version}'s models/assets folder"
        )
    try:
        return fetch_assets(version)
    except SimulationError as exc:
        raise SimulationError(
            f"the demo was recorded with robosuite {version} and needs its asset files: "
            f"{exc.message}; on a machine with registry access run `pip download --no-deps "
            f"robosuite=={version}` and set {ASSETS_ENV} to the models/assets folder inside"
        ) from None


@functools.lru_cache(maxsize=8)
def _index_by_name(root: str) -> dict[str, tuple[str, ...]]:
    """File name -> every path under `root` with that name."""
    index: dict[str, list[str]] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            index.setdefault(name, []).append(os.path.join(folder, name))
    return {name: tuple(sorted(paths)) for name, paths in index.items()}


def _relative_to_assets(path: str) -> str | None:
    """The part of a stored path after its last `robosuite/models/assets/`."""
    parts = path.replace("\\", "/").split("/")
    for i in range(len(parts) - 3, -1, -1):
        if tuple(parts[i : i + 3]) == _ASSETS_MARKER:
            return "/".join(parts[i + 3 :])
    return None


def _resolve_one(stored: str, root: Path, version: str) -> str:
    rel = _relative_to_assets(stored)
    if rel is None:
        if os.path.exists(stored):
            return stored  # the user's own file, outside robosuite
        raise SimulationError(
            f"the stored model names {stored}, which is not on this machine (recorded with "
            f"robosuite {version})"
        )
    candidate = root / rel
    if candidate.is_file():
        return str(candidate)
    matches = _index_by_name(str(root)).get(os.path.basename(rel), ())
    if len(matches) == 1:
        return matches[0]
    how = "several files have its name" if matches else "no file has its name"
    raise SimulationError(
        f"asset {rel} of this robosuite {version} recording is not in robosuite {version}'s "
        f"assets ({root}; {how}); set {ASSETS_ENV} to a models/assets folder that has it"
    )


def use_recorded_assets(xml: str, version: str, root: Path | None = None) -> str:
    """The model XML with every robosuite asset path pointed at `version`'s own assets."""
    root = root if root is not None else assets_dir(version)
    try:
        tree = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise SimulationError(f"cannot load the stored model XML: {exc}") from None
    asset = tree.find("asset")
    if asset is None:
        return xml
    changed = False
    for elem in asset.iter():
        if elem.tag not in _FILE_ELEMENTS:
            continue
        for attr in (
            "file",
            *(f"file{side}" for side in ("right", "left", "up", "down", "front", "back")),
        ):
            stored = elem.get(attr)
            if stored:
                resolved = _resolve_one(stored, root, version)
                if resolved != stored:
                    elem.set(attr, resolved)
                    changed = True
    return ET.tostring(tree, encoding="unicode") if changed else xml


def missing_asset_files(xml: str) -> list[str]:
    """Asset files named by a model XML that do not exist on this machine."""
    try:
        tree = ET.fromstring(xml)
    except ET.ParseError:
        return []
    asset = tree.find("asset")
    if asset is None:
        return []
    missing = []
    for elem in asset.iter():
        if elem.tag in _FILE_ELEMENTS and elem.get("file") and not os.path.exists(elem.get("file")):
            missing.append(elem.get("file"))
    return missing


def prepare_model_xml(xml: str, recorded_version: str | None) -> str:
    """A stored model XML (already edited by the installed robosuite) ready to load here.

    A recording of another robosuite series (from env_version / repository_version, else
    from the XML) gets its own version's assets. A recording of unknown version whose
    files all exist loads as it is; one with missing files raises one line naming the
    first missing file and the way out.
    """
    version = recorded_version if parse_version(recorded_version) else None
    version = version or version_from_xml(xml) or recorded_version_override()
    if version and needs_own_assets(version):
        return use_recorded_assets(xml, version)
    missing = missing_asset_files(xml)
    if not missing:
        return xml
    if version:
        return use_recorded_assets(xml, version)
    first = _relative_to_assets(missing[0]) or missing[0]
    raise SimulationError(
        f"the stored model names asset {first}, which the installed robosuite "
        f"{installed_robosuite_version()} lacks, and the file does not say which robosuite "
        f"version recorded it; set {VERSION_ENV} to that version"
    )


def recorded_version_override() -> str | None:
    """The recording version from DEMOSET_ROBOSUITE_VERSION, for files that do not say."""
    value = os.environ.get(VERSION_ENV, "").strip()
    return value or None
