"""robomimic files out to Minari (see `minari_layout` for Minari's files).

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

from demoset.convert.demo_record import (
    check_export_target,
    demos_to_export,
    filter_keys_of,
    plain_data_attrs,
)
from demoset.convert.minari_layout import (
    BOX_KEY,
    DATASET_ID_RE,
    DEFAULT_MINARI_VERSION,
    EXTRAS,
    MAIN_FILE,
    METADATA_FILE,
    NAMESPACE_METADATA_FILE,
    is_dataset_id,
    minari_root,
)
from demoset.errors import ConversionError
from demoset.format import (
    ENV_TYPE_GYM,
    open_dataset,
)


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
    check_export_target(target, overwrite, make_parent=True)
    parent = os.path.dirname(target.rstrip(os.sep))
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
        demos = demos_to_export(df, dataset, filter_key)
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
        filter_keys = filter_keys_of(df, demos)
        data_attrs = plain_data_attrs(df)
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
