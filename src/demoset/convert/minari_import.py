"""Minari datasets (HDF5 storage) into the robomimic layout (see `minari_layout` for
Minari's files).

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
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from demoset.convert.minari_layout import (
    BOX_KEY,
    EPISODE_RE,
    EXTRAS,
    MAIN_FILE,
    find_minari_data,
    is_image_space,
    read_metadata,
    space_of,
)
from demoset.errors import ConversionError, DemosetError
from demoset.format import (
    ENV_TYPE_GYM,
    READ_ERRORS,
    DatasetWriter,
    array_nbytes,
    check_dataset_safe,
    check_dataset_size,
    check_link_safe,
    open_h5,
    untrusted_input,
)
from demoset.memory import ensure_fits


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
    found = [(int(m.group(1)), k) for k in h5.keys() if (m := EPISODE_RE.match(k))]
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
    meta = read_metadata(folder)
    if meta.get("data_format", "hdf5") != "hdf5":
        raise ConversionError(
            f"data_format {meta.get('data_format')!r} is not supported; only hdf5", main
        )
    obs_space = space_of(meta, "observation_space", folder)
    act_space = space_of(meta, "action_space", folder)
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
