"""Minari datasets (HDF5 storage) into the robomimic layout, and robomimic files out to Minari.

A Minari dataset is a folder `<dataset id>/data/` holding `metadata.json` (spaces, env
spec, counts) and `main_data.hdf5`, whose groups `episode_<i>` hold `observations` (N + 1
steps: the first observation of the episode and the one after each action), `actions`,
`rewards`, `terminations`, `truncations` (N steps) and `infos`. Dict observation spaces
are groups, Tuple spaces groups of `_index_<i>`, and images (uint8 Box spaces of at least
32x32 bounded by 0 and 255) are stored as JPEG bytes.

Import (`convert_minari`), one demo per episode:
- `obs/<key>` = observations[:N], `next_obs/<key>` = observations[1:]. A Box observation
  space becomes the single key `flat` (the name robomimic's gym wrapper uses); Dict keys
  keep their names, nested ones joined with "."; images are decoded to uint8 (H, W, C).
- `actions` (N, A): Box actions flattened per step, Discrete ones as a column; Dict and
  Tuple actions are concatenated, and each part is also kept under `action_dict/`.
- `rewards`; `dones` = terminations. Truncations are not stored (robomimic has no such
  field); an episode that was truncated simply has no done.
- `infos/*` numeric arrays become observations when asked (`infos_as_obs`): with N + 1
  entries they line up with the observations, with N entries they are taken per step.
- env_args: gym type (2) with the env id and kwargs of the dataset's env spec, or the
  dataset id when there is none.

Export (`export_minari`) writes the same layout, which `minari.load_dataset` reads. What
Minari has no field for is kept where Minari does not look, so that importing the export
gives back every value of the original file: a group `episode_<i>/robomimic` with the demo
name and attributes (model_file, ep_meta), `states`, `action_dict`, exact `dones`, and
`next_obs` when it is not simply the next observation; `metadata.json` gets a `robomimic`
entry with env_args and filter keys. Minari itself stores images as JPEG, which is lossy;
`exact_images=True` also stores the raw frames in the robomimic group so that the round
trip is exact for images too.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from demoset.errors import ConversionError, DemosetError, WriteError
from demoset.format import (
    ENV_TYPE_GYM,
    READ_ERRORS,
    DatasetWriter,
    array_nbytes,
    check_dataset_safe,
    check_dataset_size,
    check_link_safe,
    open_dataset,
    open_h5,
    untrusted_input,
)
from demoset.memory import ensure_fits

MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
EXTRAS = "robomimic"
"""Group inside each episode (and key in metadata.json) for what Minari has no field for."""
BOX_KEY = "flat"
NAMESPACE_METADATA_FILE = "namespace_metadata.json"
DEFAULT_MINARI_VERSION = "0.5.3"
DATASET_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")
_EPISODE_RE = re.compile(r"^episode_(\d+)$")


# --------------------------------------------------------------------------- locations
def minari_root() -> str:
    """Where Minari keeps local datasets: $MINARI_DATASETS_PATH or ~/.minari/datasets."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return root if root else os.path.join(os.path.expanduser("~"), ".minari", "datasets")


def is_dataset_id(text: str) -> bool:
    """True for a Minari dataset id such as `robomimic/lift/ph-v0` (not a path)."""
    return (
        bool(DATASET_ID_RE.match(text))
        and not os.path.isabs(text)
        and not text.startswith((".", "~"))
    )


def find_minari_data(src: str | os.PathLike) -> str:
    """The `data` folder of a Minari dataset given as a folder, its main file, or an id."""
    src = os.fspath(src)
    candidates = []
    if os.path.isfile(src):
        candidates.append(os.path.dirname(os.path.abspath(src)))
    elif os.path.isdir(src):
        candidates += [src, os.path.join(src, "data")]
    elif is_dataset_id(src):
        candidates.append(os.path.join(minari_root(), src, "data"))
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, MAIN_FILE)):
            return folder
        if os.path.isfile(os.path.join(folder, METADATA_FILE)):
            fmt = _read_metadata(folder).get("data_format")
            raise ConversionError(f"Minari {fmt!r} storage is not supported; only hdf5 is", src)
    raise ConversionError(
        f"no Minari dataset here (looked for {MAIN_FILE} in {', '.join(candidates) or 'nothing'})",
        src,
    )


def _read_metadata(folder: str) -> dict:
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"metadata.json is not readable JSON ({exc})", path) from None
    if not isinstance(data, dict):
        raise ConversionError("metadata.json is not a JSON object", path)
    return data


def _space(meta: dict, key: str, path: str) -> dict | None:
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        space = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise ConversionError(f"{key} is not JSON", path) from None
    if not isinstance(space, dict) or "type" not in space:
        raise ConversionError(f"{key} is not a serialized space", path)
    return space


def is_image_space(space: dict | None) -> bool:
    """Minari's rule for spaces it stores as JPEG: uint8 Box >= 32x32 bounded by 0..255."""
    if not space or space.get("type") != "Box":
        return False
    shape = space.get("shape") or []
    if len(shape) not in (2, 3) or shape[0] < 32 or shape[1] < 32 or space.get("dtype") != "uint8":
        return False
    low, high = np.asarray(space.get("low", 0)), np.asarray(space.get("high", 0))
    return bool(np.all(low == 0) and np.all(high == 255))


# --------------------------------------------------------------------------- reading
def _decode_jpeg(frames, name: str, path: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with minari
        raise ConversionError(
            "decoding Minari images needs Pillow (pip install pillow)", path, name
        ) from None
    out = []
    for data in frames:
        try:
            out.append(
                np.asarray(
                    Image.open(io.BytesIO(np.asarray(data, dtype=np.uint8).tobytes())),
                    dtype=np.uint8,
                )
            )
        except OSError as exc:
            raise ConversionError(f"cannot decode a JPEG frame ({exc})", path, name) from None
    return np.stack(out) if out else np.zeros((0,), dtype=np.uint8)


def _checked(node: h5py.Group, key: str, path: str):
    check_link_safe(node, key, path)
    obj = node[key]
    if isinstance(obj, h5py.Dataset):
        check_dataset_safe(obj, path)
        # arrays here are read whole: refuse empty dataspaces, sizes the file does not
        # store (unallocated data, decompression bombs) and reads that would not fit
        if obj.shape is None:
            raise ConversionError("the array has no data (empty dataspace)", path, obj.name)
        check_dataset_size(obj, path)
        ensure_fits(array_nbytes(obj), f"reading {obj.name}", path)
    elif not isinstance(obj, h5py.Group):
        raise ConversionError("neither an array nor a group", path, f"{node.name}/{key}")
    return obj


def _read_leaf(dset, space: dict | None, path: str) -> np.ndarray:
    if not isinstance(dset, h5py.Dataset):
        raise ConversionError("expected an array, found a group", path, dset.name)
    if space and space.get("type") == "Text":
        raise ConversionError("Text spaces are not supported", path, dset.name)
    if is_image_space(space) or h5py.check_vlen_dtype(dset.dtype) == np.dtype(np.uint8):
        frames = _decode_jpeg(dset[()], dset.name, path)
        return frames[..., None] if frames.ndim == 3 else frames
    if dset.dtype.kind not in "biuf":
        raise ConversionError(f"dtype {dset.dtype} is not numeric", path, dset.name)
    return dset[()]


def _read_tree(node, space: dict | None, prefix: str, out: dict, path: str) -> None:
    """Flatten a Dict / Tuple space stored as groups into {joined name: array}."""
    kind = space.get("type") if space else None
    if isinstance(node, h5py.Group):
        if kind == "Tuple":
            subs = space["subspaces"]
            items = [(f"_index_{i}", sub) for i, sub in enumerate(subs)]
        elif kind == "Dict":
            items = list(space["subspaces"].items())
        elif kind is None:
            items = [(k, None) for k in node.keys()]
        else:
            raise ConversionError(f"a group, but the space says {kind}", path, node.name)
        for key, sub in items:
            if key not in node:
                raise ConversionError(
                    f"no '{key}' (the space lists it)", path, f"{node.name}/{key}"
                )
            _read_tree(
                _checked(node, key, path), sub, f"{prefix}.{key}" if prefix else key, out, path
            )
        return
    out[prefix] = _read_leaf(node, space, path)


def _as_columns(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(arr.shape[0], -1) if arr.ndim != 2 else arr


@dataclass
class MinariImportResult:
    """What `convert_minari` wrote."""

    out: str
    demos: int
    transitions: int
    dataset_id: str
    env_name: str
    obs_keys: list[str] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)
    """Observation keys decoded from Minari's JPEG storage."""
    restored_from_export: bool = False
    """True when the dataset came from `export_minari` and its robomimic extras were used."""


def _env_meta_from_minari(meta: dict, dataset_id: str) -> dict:
    extras = meta.get(EXTRAS)
    if isinstance(extras, dict) and isinstance(extras.get("env_args"), str):
        try:
            env_args = json.loads(extras["env_args"])
            if isinstance(env_args, dict):
                return env_args
        except ValueError:
            pass
    spec = meta.get("env_spec")
    if isinstance(spec, str):
        try:
            spec_data = json.loads(spec)
        except ValueError:
            spec_data = None
        if isinstance(spec_data, dict) and isinstance(spec_data.get("id"), str):
            kwargs = spec_data.get("kwargs") if isinstance(spec_data.get("kwargs"), dict) else {}
            return {"env_name": spec_data["id"], "type": ENV_TYPE_GYM, "env_kwargs": kwargs}
    return {"env_name": dataset_id, "type": ENV_TYPE_GYM, "env_kwargs": {}}


def _episode_names(h5: h5py.File) -> list[str]:
    found = [(int(m.group(1)), k) for k in h5.keys() if (m := _EPISODE_RE.match(k))]
    return [k for _, k in sorted(found)]


@untrusted_input(error=ConversionError)  # h5py errors on a damaged source
def convert_minari(
    src: str | os.PathLike,
    out: str | os.PathLike,
    infos_as_obs: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> MinariImportResult:
    """Convert the Minari dataset `src` (folder, main_data.hdf5, or dataset id) into `out`."""
    out = os.fspath(out)
    folder = find_minari_data(src)
    main = os.path.join(folder, MAIN_FILE)
    meta = _read_metadata(folder)
    if meta.get("data_format", "hdf5") != "hdf5":
        raise ConversionError(
            f"data_format {meta.get('data_format')!r} is not supported; only hdf5", main
        )
    obs_space = _space(meta, "observation_space", folder)
    act_space = _space(meta, "action_space", folder)
    dataset_id = str(
        meta.get("dataset_id") or os.path.basename(os.path.dirname(os.path.abspath(folder)))
    )
    env_meta = _env_meta_from_minari(meta, dataset_id)
    extras_meta = meta.get(EXTRAS) if isinstance(meta.get(EXTRAS), dict) else {}
    data_attrs: dict[str, Any] = {"source_format": "minari", "minari_dataset_id": dataset_id}
    for key, value in (extras_meta.get("data_attrs") or {}).items():
        if key not in ("total", "env_args"):
            data_attrs[key] = value

    obs_keys: list[str] = []
    image_keys: list[str] = []
    restored = False
    transitions = 0
    with open_h5(main, "r") as h5:
        episodes = _episode_names(h5)
        if not episodes:
            raise ConversionError(
                "no episode_<i> groups: not a Minari HDF5 storage file", main, "/"
            )
        try:
            with DatasetWriter(
                out, env_meta=env_meta, atomic=True, overwrite=overwrite, data_attrs=data_attrs
            ) as writer:
                names: dict[str, str] = {}
                for k, ep in enumerate(episodes):
                    check_link_safe(h5, ep, main)
                    grp = h5[ep]
                    demo = _import_episode(grp, writer, obs_space, act_space, infos_as_obs, main)
                    names[demo["source_name"] or demo["name"]] = demo["name"]
                    restored = restored or demo["restored"]
                    transitions += demo["steps"]
                    if k == 0:
                        obs_keys, image_keys = demo["obs_keys"], demo["image_keys"]
                    if progress is not None:
                        progress(k + 1, len(episodes))
                for name, members in (extras_meta.get("filter_keys") or {}).items():
                    if isinstance(members, list) and all(m in names for m in members):
                        writer.set_filter_key(str(name), [names[m] for m in members])
        except DemosetError:
            raise
        except READ_ERRORS as exc:  # whatever h5py raises on a damaged source
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"cannot read the source ({first})", main) from None
    return MinariImportResult(
        out=out,
        demos=len(episodes),
        transitions=transitions,
        dataset_id=dataset_id,
        env_name=str(env_meta.get("env_name")),
        obs_keys=obs_keys,
        image_keys=image_keys,
        restored_from_export=restored,
    )


def _import_episode(
    grp: h5py.Group, writer: DatasetWriter, obs_space, act_space, infos_as_obs, path
) -> dict:
    for key in ("observations", "actions", "rewards", "terminations"):
        if key not in grp:
            raise ConversionError(f"no '{key}' in this episode", path, f"{grp.name}/{key}")
    observations: dict[str, np.ndarray] = {}
    obs_node = _checked(grp, "observations", path)
    if isinstance(obs_node, h5py.Dataset):
        observations[BOX_KEY] = _read_leaf(obs_node, obs_space, path)
    else:
        _read_tree(obs_node, obs_space, "", observations, path)
    image_keys = sorted(k for k, v in observations.items() if v.dtype == np.uint8 and v.ndim == 4)
    act_node = _checked(grp, "actions", path)
    action_parts: dict[str, np.ndarray] = {}
    if isinstance(act_node, h5py.Dataset):
        actions = _as_columns(_read_leaf(act_node, act_space, path))
    else:
        _read_tree(act_node, act_space, "", action_parts, path)
        actions = np.concatenate([_as_columns(v) for v in action_parts.values()], axis=1)
    rewards = _checked(grp, "rewards", path)[()].reshape(-1)
    terminations = _checked(grp, "terminations", path)[()].reshape(-1)
    n = int(actions.shape[0])
    if rewards.shape[0] != n or terminations.shape[0] != n:
        raise ConversionError(
            f"actions has {n} steps, rewards {rewards.shape[0]}, terminations {terminations.shape[0]}",
            path,
            grp.name,
        )
    if n == 0:
        raise ConversionError("an episode with no steps", path, grp.name)
    obs, next_obs = {}, {}
    for key, arr in observations.items():
        if arr.shape[0] == n + 1:
            obs[key], next_obs[key] = arr[:n], arr[1:]
        elif arr.shape[0] == n:
            obs[key] = arr
            next_obs[key] = np.concatenate([arr[1:], arr[-1:]])
        else:
            raise ConversionError(
                f"observations '{key}' has {arr.shape[0]} steps; expected {n + 1} (or {n})",
                path,
                grp.name,
            )
    if infos_as_obs and "infos" in grp and isinstance(grp["infos"], h5py.Group):
        infos: dict[str, np.ndarray] = {}
        _read_infos(_checked(grp, "infos", path), "", infos, path)
        for key, arr in infos.items():
            if key in obs:
                raise ConversionError(
                    f"info '{key}' collides with an observation key", path, f"{grp.name}/infos"
                )
            if arr.shape[0] == n + 1:
                obs[key], next_obs[key] = arr[:n], arr[1:]
            elif arr.shape[0] == n:
                obs[key], next_obs[key] = arr, np.concatenate([arr[1:], arr[-1:]])
    dones = terminations.astype(np.int64)
    states = None
    action_dict = {k: _as_columns(v) for k, v in action_parts.items()} or None
    name = None
    source_name = None
    attrs: dict[str, Any] = {}
    restored = False
    if EXTRAS in grp and isinstance(grp[EXTRAS], h5py.Group):
        restored = True
        extras = _checked(grp, EXTRAS, path)
        source_name = _text(extras.attrs.get("demo")) or None
        name = source_name
        if "attrs" in extras:
            attrs = {
                k: v for k, v in _checked(extras, "attrs", path).attrs.items() if k != "num_samples"
            }
        if "states" in extras:
            states = _checked(extras, "states", path)[()]
        if "dones" in extras:
            dones = _checked(extras, "dones", path)[()]
        if "action_dict" in extras:
            action_dict = {}
            for key in _checked(extras, "action_dict", path).keys():
                action_dict[key] = _checked(extras["action_dict"], key, path)[()]
        if "exact_obs" in extras:
            for key in _checked(extras, "exact_obs", path).keys():
                arr = _checked(extras["exact_obs"], key, path)[()]
                obs[key], next_obs[key] = arr[:n], arr[1:]
        mode = _text(extras.attrs.get("next_obs")) or "shift"
        if mode == "stored" and "next_obs" in extras:
            for key in _checked(extras, "next_obs", path).keys():
                next_obs[key] = _checked(extras["next_obs"], key, path)[()]
        elif mode == "none":
            next_obs = {}
    model_file = attrs.pop("model_file", None)
    ep_meta = attrs.pop("ep_meta", None)
    demo = writer.add_demo(
        actions=actions,
        obs=obs,
        next_obs=next_obs or None,
        rewards=rewards,
        dones=dones,
        states=states,
        model_file=_text(model_file) if model_file is not None else None,
        ep_meta=_text(ep_meta) if ep_meta is not None else None,
        action_dict=action_dict,
        attrs=attrs or None,
        name=name,
    )
    return {
        "name": demo,
        "source_name": source_name,
        "steps": n,
        "restored": restored,
        "obs_keys": sorted(obs),
        "image_keys": image_keys,
    }


def _read_infos(node: h5py.Group, prefix: str, out: dict, path: str) -> None:
    for key in node.keys():
        obj = _checked(node, key, path)
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(obj, h5py.Group):
            _read_infos(obj, name, out, path)
        elif obj.ndim >= 1 and obj.dtype.kind in "biuf":
            out[name] = obj[()]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


# --------------------------------------------------------------------------- writing
@dataclass
class MinariExportResult:
    """What `export_minari` wrote."""

    dataset_dir: str
    """The dataset folder (holding data/main_data.hdf5 and data/metadata.json)."""
    dataset_id: str
    episodes: int
    steps: int
    image_keys: list[str] = field(default_factory=list)
    """Observation keys stored as JPEG (Minari's image storage)."""
    exact_images: bool = False


def _bounds(dtype: np.dtype, lo: float, hi: float) -> tuple[Any, Any]:
    if dtype.kind == "f":
        return lo, hi
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return max(lo, info.min) if np.isfinite(lo) else int(info.min), min(
            hi, info.max
        ) if np.isfinite(hi) else int(info.max)
    raise ConversionError(f"dtype {dtype} has no Minari Box space (only numbers)")


def box_space(shape: Sequence[int], dtype, low: float = -np.inf, high: float = np.inf) -> dict:
    """A Minari-serialized Box space of `shape` with constant bounds."""
    dtype = np.dtype(dtype)
    lo, hi = _bounds(dtype, low, high)
    full_lo = np.full(
        tuple(shape), lo, dtype=np.float64 if dtype.kind == "f" else np.int64
    ).tolist()
    full_hi = np.full(
        tuple(shape), hi, dtype=np.float64 if dtype.kind == "f" else np.int64
    ).tolist()
    return {
        "type": "Box",
        "dtype": str(dtype),
        "shape": list(shape),
        "low": full_lo,
        "high": full_hi,
    }


def _encode_jpeg(frames: np.ndarray) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for frame in frames:
        if frame.ndim == 3 and frame.shape[-1] == 1:
            frame = frame[..., 0]
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG")
        out.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    return out


def _image_key(key: str, info, path: str) -> bool:
    """True for observations Minari stores as JPEG; refuses uint8 arrays it would misread."""
    shape = info.shape
    if info.dtype != np.uint8 or len(shape) not in (2, 3) or shape[0] < 32 or shape[1] < 32:
        return False
    if len(shape) == 3 and shape[2] in (1, 3):
        return True
    raise ConversionError(
        f"uint8 observation of shape {shape}: Minari reads such arrays as JPEG images, "
        "which only hold 1 or 3 channels",
        path,
        f"obs/{key}",
    )


def _resolve_export_target(out: str, dataset_id: str | None) -> tuple[str, str, bool]:
    """(dataset folder, dataset id, by id) for an --out that is a Minari id or a folder path."""
    if is_dataset_id(out) and not os.path.isdir(out):
        if dataset_id not in (None, out):
            raise ConversionError(
                f"--out is already a dataset id; it differs from {dataset_id!r}", out
            )
        return os.path.join(minari_root(), out), out, True
    folder = os.path.abspath(os.path.expanduser(out))
    if dataset_id is None:
        base = os.path.basename(folder.rstrip(os.sep))
        dataset_id = base if re.search(r"-v\d+$", base) else f"{base}-v0"
    if not DATASET_ID_RE.match(dataset_id):
        raise ConversionError(
            f"{dataset_id!r} is not a Minari dataset id ((namespace/)name-v<version>); pass --dataset-id",
            out,
        )
    return folder, dataset_id, False


def _minari_version() -> str:
    try:
        from importlib.metadata import version

        return version("minari")
    except Exception:  # noqa: BLE001 - minari is optional for export
        return DEFAULT_MINARI_VERSION


def _gym_env_spec(env_meta) -> str | None:
    """The gymnasium EnvSpec JSON of a gym-type env_args, when gymnasium knows the id."""
    if env_meta is None or env_meta.env_type != ENV_TYPE_GYM:
        return None
    try:
        import gymnasium as gym

        spec = gym.spec(env_meta.env_name)
        if env_meta.env_kwargs:
            spec = dataclasses.replace(spec, kwargs={**spec.kwargs, **env_meta.env_kwargs})
        return spec.to_json()
    except Exception:  # noqa: BLE001 - unknown ids, missing gymnasium, unserialisable kwargs
        return None


def export_minari(
    dataset: str | os.PathLike,
    out: str,
    dataset_id: str | None = None,
    filter_key: str | None = None,
    exact_images: bool = False,
    overwrite: bool = False,
    description: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MinariExportResult:
    """Write the robomimic-layout file `dataset` as a Minari dataset (HDF5 storage).

    `out` is a Minari dataset id (written under $MINARI_DATASETS_PATH, where
    `minari.load_dataset(id)` finds it) or a folder path (the id is then `dataset_id` or
    the folder name with "-v0" added). The folder appears complete or not at all.
    """
    dataset = os.fspath(dataset)
    target, dataset_id, by_id = _resolve_export_target(os.fspath(out), dataset_id)
    if os.path.exists(target) and not overwrite:
        raise WriteError("exists; pass overwrite=True (--overwrite) to replace it", target)
    parent = os.path.dirname(target.rstrip(os.sep))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".partial", dir=parent)
    try:
        result = _write_minari(
            dataset, tmp, dataset_id, filter_key, exact_images, description, progress
        )
        if os.path.exists(target):
            old = tempfile.mkdtemp(
                prefix=f".{os.path.basename(target)}.", suffix=".old", dir=parent
            )
            os.rename(target, os.path.join(old, "d"))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if by_id:
        _write_namespace_metadata(dataset_id)
    result.dataset_dir = target
    return result


def _write_namespace_metadata(dataset_id: str) -> None:
    """Minari marks namespace folders with a namespace_metadata.json; add missing ones."""
    folder = minari_root()
    for part in dataset_id.split("/")[:-1]:
        folder = os.path.join(folder, part)
        path = os.path.join(folder, NAMESPACE_METADATA_FILE)
        if os.path.isdir(folder) and not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as f:
                json.dump({}, f)


def _write_minari(
    dataset, folder, dataset_id, filter_key, exact_images, description, progress
) -> MinariExportResult:
    data_dir = os.path.join(folder, "data")
    os.makedirs(data_dir)
    with open_dataset(dataset) as df:
        demos = df.demos_for(filter_key)
        if not demos:
            raise ConversionError(
                "no demos to export", dataset, f"/mask/{filter_key}" if filter_key else "/data"
            )
        obs_info = df.obs_keys(demos[0])
        act_info = df.array_keys(demos[0]).get("actions")
        if act_info is None:
            raise ConversionError("no actions", dataset, f"/data/{demos[0]}/actions")
        image_keys = sorted(k for k, info in obs_info.items() if _image_key(k, info, dataset))
        single_box = list(obs_info) == [BOX_KEY]
        within_unit = True
        steps = 0
        with h5py.File(os.path.join(data_dir, MAIN_FILE), "w", track_order=True) as h5:
            for i, demo in enumerate(demos):
                n, in_unit = _write_episode(
                    df,
                    demo,
                    h5.create_group(f"episode_{i}"),
                    i,
                    obs_info,
                    image_keys,
                    single_box,
                    exact_images,
                )
                within_unit = within_unit and in_unit
                steps += n
                if progress is not None:
                    progress(i + 1, len(demos))
        obs_space: dict
        if single_box:
            info = obs_info[BOX_KEY]
            obs_space = box_space(info.shape, info.dtype)
        else:
            obs_space = {"type": "Dict", "subspaces": {}}
            for key, info in obs_info.items():
                if key in image_keys:
                    obs_space["subspaces"][key] = box_space(info.shape, np.uint8, 0, 255)
                else:
                    obs_space["subspaces"][key] = box_space(info.shape, info.dtype)
        lo, hi = (-1.0, 1.0) if within_unit else (-np.inf, np.inf)
        action_space = box_space(act_info.shape, act_info.dtype, lo, hi)
        env_meta = df.env_meta
        keys_in_export = set(demos)
        filter_keys = {}
        for key in df.filter_keys:
            members = [d for d in df.filter_key_demos(key) if d in keys_in_export]
            if members:
                filter_keys[key] = members
        data_attrs = {}
        for key, value in df.data_attrs().items():
            if key in ("total", "env_args"):
                continue
            value = value.item() if isinstance(value, np.generic) else value
            value = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
            if isinstance(value, (str, int, float, bool)):
                data_attrs[key] = value
        metadata: dict[str, Any] = {
            "total_episodes": len(demos),
            "total_steps": steps,
            "data_format": "hdf5",
            "observation_space": json.dumps(obs_space),
            "action_space": json.dumps(action_space),
        }
        spec = _gym_env_spec(env_meta)
        if spec is not None:
            metadata["env_spec"] = spec
        metadata.update(
            {
                "dataset_id": dataset_id,
                "minari_version": _minari_version(),
                "description": description
                or f"Exported by demoset from the robomimic-layout file {os.path.basename(dataset)}",
                EXTRAS: {
                    "env_args": env_meta.to_json() if env_meta is not None else None,
                    "filter_keys": filter_keys,
                    "data_attrs": data_attrs,
                    "source_file": os.path.basename(dataset),
                },
            }
        )
    size = sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir)) / 1e6
    metadata["dataset_size"] = round(size, 1)
    with open(os.path.join(data_dir, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(metadata, f)
    return MinariExportResult(
        dataset_dir=folder,
        dataset_id=dataset_id,
        episodes=len(demos),
        steps=steps,
        image_keys=image_keys,
        exact_images=exact_images,
    )


def _write_episode(
    df, demo, grp, index, obs_info, image_keys, single_box, exact_images
) -> tuple[int, bool]:
    n = df.num_samples(demo)
    actions = df.read(demo, "actions")
    obs = {k: df.read(demo, f"obs/{k}") for k in obs_info if df.has(demo, f"obs/{k}")}
    if set(obs) != set(obs_info):
        raise ConversionError(
            f"obs keys {sorted(obs)} differ from the first demo's {sorted(obs_info)}",
            df.path,
            f"/data/{demo}/obs",
        )
    has_next = all(df.has(demo, f"next_obs/{k}") for k in obs)
    next_obs = {k: df.read(demo, f"next_obs/{k}") for k in obs} if has_next else {}
    rewards = df.read(demo, "rewards") if df.has(demo, "rewards") else np.zeros(n)
    dones = df.read(demo, "dones") if df.has(demo, "dones") else np.zeros(n, dtype=np.int64)
    grp.attrs["id"] = index
    grp.attrs["total_steps"] = n
    extras = grp.create_group(EXTRAS)
    extras.attrs["demo"] = demo
    stored_next = False
    full: dict[str, np.ndarray] = {}
    for key, arr in obs.items():
        last = next_obs[key][-1:] if has_next else arr[-1:]
        full[key] = np.concatenate([arr, last.astype(arr.dtype, copy=False)])
        if has_next and not np.array_equal(
            next_obs[key][:-1], arr[1:], equal_nan=arr.dtype.kind == "f"
        ):
            stored_next = True
    if single_box:
        grp.create_dataset("observations", data=full[BOX_KEY])
    else:
        obs_grp = grp.create_group("observations")
        for key, arr in full.items():
            if key in image_keys:
                frames = np.empty(arr.shape[0], dtype=object)
                for t, frame in enumerate(_encode_jpeg(arr)):
                    frames[t] = frame
                obs_grp.create_dataset(key, data=frames, dtype=h5py.vlen_dtype(np.uint8))
            else:
                obs_grp.create_dataset(key, data=arr)
    grp.create_dataset("actions", data=actions)
    grp.create_dataset("rewards", data=rewards)
    terminations = np.asarray(dones) != 0
    grp.create_dataset("terminations", data=terminations)
    truncations = np.zeros(n, dtype=bool)
    truncations[-1] = not terminations[-1]
    grp.create_dataset("truncations", data=truncations)
    grp.create_group("infos")
    if not np.array_equal(terminations.astype(dones.dtype), dones) or dones.dtype != np.int64:
        extras.create_dataset("dones", data=dones)
    if not has_next:
        extras.attrs["next_obs"] = "none"
    elif stored_next:
        extras.attrs["next_obs"] = "stored"
        nxt = extras.create_group("next_obs")
        for key, arr in next_obs.items():
            nxt.create_dataset(key, data=arr, **_image_chunks(arr, key in image_keys))
    else:
        extras.attrs["next_obs"] = "shift"
    if exact_images and image_keys:
        exact = extras.create_group("exact_obs")
        for key in image_keys:
            exact.create_dataset(key, data=full[key], **_image_chunks(full[key], True))
    if df.has(demo, "states"):
        extras.create_dataset("states", data=df.read(demo, "states"))
    ad = df.action_dict_keys(demo)
    if ad:
        adg = extras.create_group("action_dict")
        for key in ad:
            adg.create_dataset(key, data=df.read(demo, f"action_dict/{key}"))
    attr_grp = extras.create_group("attrs")
    source_attrs = df.group(demo).attrs
    for key in source_attrs.keys():
        if key != "num_samples":
            attr_grp.attrs[key] = source_attrs[key]
    in_unit = bool(actions.size == 0 or (np.all(actions >= -1.0) and np.all(actions <= 1.0)))
    return n, in_unit


def _image_chunks(arr: np.ndarray, is_image: bool) -> dict:
    if is_image and arr.ndim == 4:
        return {"chunks": (1, *arr.shape[1:]), "compression": "gzip", "compression_opts": 4}
    return {}
