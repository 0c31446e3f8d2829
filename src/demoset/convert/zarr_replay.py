"""diffusion_policy's replay buffer (a zarr store) in and out of the robomimic layout.

The store diffusion_policy's `ReplayBuffer` reads is a zarr group:

    data/<key>          one array per key, all of the same length (every step of every
                        episode, end to end); diffusion_policy names the actions `action`
    meta/episode_ends   int64 (E,), cumulative: episode i is rows [ends[i-1], ends[i])

Export (`export_zarr`) writes zarr format 2 (what diffusion_policy's zarr 2 opens, and
zarr 3 too) with the zarr package: `data/action`, `data/<obs key>` for each observation,
and `data/rewards`, `data/dones`, `data/states`, `data/action_dict.<key>` so that no value
is lost. Images are chunked one frame per chunk, as diffusion_policy stores them, but
compressed losslessly (Blosc zstd with bit shuffle; diffusion_policy's Jpeg2k is a
numcodecs plug-in outside zarr 3's codecs); low-dim arrays use Blosc zstd in larger
chunks. What has no array goes to the root attributes under "demoset": env_args,
filter keys, /data attributes, demo names and attributes (model_file, ep_meta), how each
demo's next_obs is made; `meta/final_obs.<key>` holds the observation after each
episode's last action (`data/next_obs.<key>` the whole next_obs when it is not obs
shifted by one).

Import (`convert_zarr`) reads such a store back exactly, and any other replay buffer as:
`action` (or `actions`) -> actions, every other data key -> an observation (next_obs
shifted by one), rewards zero, dones 1 on each episode's last step, env_args a gym-type
(2) placeholder named after the store, and train/valid filter keys split as robomimic's
script does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demoset.convert.demo_record import (
    NONE,
    SHIFT,
    STORED,
    DemoRecord,
    check_export_target,
    demos_to_export,
    filter_keys_of,
    plain_data_attrs,
    read_demo,
    write_demo,
)
from demoset.errors import ConversionError
from demoset.format import ENV_TYPE_GYM, DatasetWriter, open_dataset
from demoset.fsutil import replace_folder
from demoset.masks import keys_among, train_valid_keys

ACTION = "action"
REWARDS, DONES, STATES = "rewards", "dones", "states"
ACTION_DICT = "action_dict."
NEXT_OBS = "next_obs."
FINAL_OBS = "final_obs."
EPISODE_ENDS = "episode_ends"
ATTRS_KEY = "demoset"
LOWDIM_CHUNK_BYTES = 1 << 20


def _zarr():
    try:
        import numcodecs
        import zarr
    except ImportError:
        raise ConversionError("zarr stores need zarr (pip install 'demoset[zarr]')") from None
    return zarr, numcodecs


@dataclass
class ZarrExportResult:
    """What `export_zarr` wrote."""

    path: str
    episodes: int
    steps: int
    data_keys: list[str] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)
    bytes: int = 0


@dataclass
class ZarrImportResult:
    """What `convert_zarr` wrote."""

    out: str
    demos: int
    steps: int
    obs_keys: list[str] = field(default_factory=list)
    env_name: str = ""
    filter_keys: dict[str, int] = field(default_factory=dict)
    restored_from_export: bool = False


# --------------------------------------------------------------------------- export
def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": str(value.dtype)}
    return value


def _from_json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"array", "dtype"}:
        return np.asarray(value["array"], dtype=value["dtype"])
    return value


def _is_image(arr_shape: tuple, dtype) -> bool:
    return np.dtype(dtype) == np.uint8 and len(arr_shape) == 3


def export_zarr(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    filter_key: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ZarrExportResult:
    """Write the robomimic-layout file `dataset` as a diffusion_policy replay-buffer store.

    `out` is a folder (by convention ending in .zarr); it appears complete or not at all.
    """
    zarr, numcodecs = _zarr()
    dataset = os.fspath(dataset)
    target = os.path.abspath(os.fspath(out))
    check_export_target(target, overwrite)
    parent = os.path.dirname(target)
    with open_dataset(dataset) as df:
        demos = demos_to_export(df, dataset, filter_key)
        first = demos[0]
        obs_info = df.obs_keys(first)
        arrays = df.array_keys(first)
        if "actions" not in arrays:
            raise ConversionError("no actions", dataset, f"/data/{first}/actions")
        reserved = {ACTION, REWARDS, DONES, STATES}
        for key in obs_info:
            if key in reserved or key.startswith((ACTION_DICT, NEXT_OBS)):
                raise ConversionError(
                    f"obs key {key!r} collides with a replay-buffer array name",
                    dataset,
                    f"/data/{first}/obs/{key}",
                )
        lengths = df.lengths(demos)
        total = int(lengths.sum())
        ends = np.cumsum(lengths).astype(np.int64)
        records_meta: list[dict] = []
        # the layout of every data array, from the first demo
        specs: dict[str, tuple[tuple, np.dtype]] = {
            ACTION: (arrays["actions"].shape, arrays["actions"].dtype),
            REWARDS: (arrays["rewards"].shape, arrays["rewards"].dtype)
            if "rewards" in arrays
            else ((), np.dtype(np.float64)),
            DONES: (arrays["dones"].shape, arrays["dones"].dtype)
            if "dones" in arrays
            else ((), np.dtype(np.int64)),
        }
        if "states" in arrays:
            specs[STATES] = (arrays["states"].shape, arrays["states"].dtype)
        for key, info in obs_info.items():
            specs[key] = (info.shape, info.dtype)
        for key, info in df.action_dict_keys(first).items():
            specs[ACTION_DICT + key] = (info.shape, info.dtype)
        tmp = tempfile.mkdtemp(
            prefix=f".{os.path.basename(target)}.", suffix=".partial", dir=parent
        )
        try:
            root = zarr.open_group(tmp, mode="w", zarr_format=2)
            data = root.require_group("data")
            meta = root.require_group("meta")
            blosc = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)

            def make_array(key: str, shape: tuple, dtype):
                per_step = int(np.prod(shape)) * np.dtype(dtype).itemsize
                if _is_image(shape, dtype):
                    chunk = 1
                else:
                    chunk = max(1, min(total, LOWDIM_CHUNK_BYTES // max(per_step, 1)))
                return data.create_array(
                    key,
                    shape=(total, *shape),
                    chunks=(chunk, *shape),
                    dtype=dtype,
                    compressors=blosc,
                )

            out_arrays = {key: make_array(key, *spec) for key, spec in specs.items()}
            final_obs = {
                key: np.zeros((len(demos), *info.shape), dtype=info.dtype)
                for key, info in obs_info.items()
            }
            spans: list[tuple[int, int, str]] = []
            start = 0
            for i, demo in enumerate(demos):
                rec = read_demo(df, demo, list(obs_info))
                n = rec.steps
                if (
                    rec.next_obs_mode == STORED
                    and NEXT_OBS + next(iter(obs_info)) not in out_arrays
                ):
                    # the first next_obs that is not a shift: from now on next_obs is stored
                    # whole, and the demos before get theirs from the obs already written
                    for key, info in obs_info.items():
                        arr = out_arrays[NEXT_OBS + key] = make_array(
                            NEXT_OBS + key, info.shape, info.dtype
                        )
                        for j, (a, m, mode) in enumerate(spans):
                            prev = out_arrays[key][a : a + m]
                            last = final_obs[key][j][None] if mode == SHIFT else prev[-1:]
                            arr[a : a + m] = np.concatenate([prev[1:], last])
                values = {ACTION: rec.actions, REWARDS: rec.rewards, DONES: rec.dones}
                if STATES in specs:
                    values[STATES] = rec.states
                values.update(rec.obs)
                values.update({ACTION_DICT + k: v for k, v in rec.action_dict.items()})
                if any(k.startswith(NEXT_OBS) for k in out_arrays):
                    nxt = rec.next_obs if rec.next_obs_mode == STORED else _shifted(rec)
                    values.update({NEXT_OBS + k: v for k, v in nxt.items()})
                for key, arr_out in out_arrays.items():
                    value = values.get(key)
                    if value is None:
                        raise ConversionError(
                            f"no {key} (the first demo has it)", dataset, f"/data/{demo}"
                        )
                    if value.shape[1:] != arr_out.shape[1:] or value.dtype != arr_out.dtype:
                        raise ConversionError(
                            f"{key} is {value.dtype} {value.shape[1:]}, the first demo's "
                            f"{arr_out.dtype} {arr_out.shape[1:]}",
                            dataset,
                            f"/data/{demo}",
                        )
                    arr_out[start : start + n] = value
                for key, row in rec.final_obs.items():
                    final_obs[key][i] = row
                spans.append((start, n, rec.next_obs_mode))
                records_meta.append(
                    {
                        "name": demo,
                        "next_obs": rec.next_obs_mode,
                        "attrs": {k: _json_value(v) for k, v in rec.attrs.items()},
                    }
                )
                start += n
                if progress is not None:
                    progress(i + 1, len(demos))
            ends_arr = meta.create_array(
                EPISODE_ENDS, shape=ends.shape, chunks=ends.shape, dtype=np.int64, compressors=None
            )
            ends_arr[:] = ends
            for key, arr in final_obs.items() if any(m == SHIFT for _, _, m in spans) else ():
                chunks = (1, *arr.shape[1:]) if arr.ndim == 4 else arr.shape
                dst = meta.create_array(
                    FINAL_OBS + key,
                    shape=arr.shape,
                    chunks=chunks,
                    dtype=arr.dtype,
                    compressors=blosc,
                )
                dst[:] = arr
            env_meta = df.env_meta
            root.attrs[ATTRS_KEY] = {
                "format_version": 1,
                "env_args": env_meta.to_json() if env_meta is not None else None,
                "filter_keys": filter_keys_of(df, demos),
                "data_attrs": plain_data_attrs(df),
                "obs_keys": list(obs_info),
                "demos": records_meta,
                "source_file": os.path.basename(dataset),
            }
            replace_folder(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    size = sum(
        os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(target) for f in files
    )
    return ZarrExportResult(
        path=target,
        episodes=len(demos),
        steps=total,
        data_keys=list(specs),
        image_keys=[k for k, (s, d) in specs.items() if _is_image(s, d)],
        bytes=size,
    )


def _shifted(rec: DemoRecord) -> dict[str, np.ndarray]:
    last = rec.final_obs if rec.next_obs_mode == SHIFT else {}
    return {
        k: np.concatenate([v[1:], (last[k][None] if k in last else v[-1:]).astype(v.dtype)])
        for k, v in rec.obs.items()
    }


# --------------------------------------------------------------------------- import
def _open_store(src: str):
    zarr, _ = _zarr()
    if not os.path.isdir(src):
        raise ConversionError("not a zarr store (a replay buffer is a folder)", src)
    try:
        root = zarr.open_group(src, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several kinds
        raise ConversionError(f"not a zarr group ({exc})", src) from None
    for name in ("data", "meta"):
        if name not in root or not isinstance(root[name], zarr.Group):
            raise ConversionError(f"no {name}/ group: not a replay buffer", src)
    return root


def _check_store(root, src: str) -> tuple[np.ndarray, dict]:
    meta, data = root["meta"], root["data"]
    if EPISODE_ENDS not in meta:
        raise ConversionError("no meta/episode_ends: not a replay buffer", src)
    ends = np.asarray(meta[EPISODE_ENDS][...])
    if ends.ndim != 1 or ends.dtype.kind not in "iu" or ends.size == 0:
        raise ConversionError(
            f"meta/episode_ends must be a non-empty 1-D integer array, got {ends.dtype} {ends.shape}",
            src,
        )
    if ends[0] <= 0 or np.any(np.diff(ends) <= 0):
        raise ConversionError(
            "meta/episode_ends must be cumulative ends (positive, strictly increasing)", src
        )
    arrays = dict(data.arrays())
    if not arrays:
        raise ConversionError("data/ holds no arrays", src)
    for key, arr in arrays.items():
        if arr.shape[0] != ends[-1]:
            raise ConversionError(
                f"data/{key} has {arr.shape[0]} rows; meta/episode_ends ends at {ends[-1]}", src
            )
    if ACTION not in arrays and "actions" not in arrays:
        raise ConversionError("no data/action: robomimic demos need actions", src)
    return ends.astype(np.int64), arrays


def convert_zarr(
    src: str | os.PathLike,
    out: str | os.PathLike,
    valid_ratio: float = 0.1,
    seed: int = 0,
    image_compression: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ZarrImportResult:
    """Convert the replay-buffer store `src` into the robomimic-layout file `out`."""
    src = os.path.abspath(os.fspath(src))
    out = os.fspath(out)
    root = _open_store(src)
    ends, arrays = _check_store(root, src)
    extras = root.attrs.get(ATTRS_KEY)
    if extras is not None and (
        not isinstance(extras, dict) or len(extras.get("demos") or []) != ends.size
    ):
        raise ConversionError(
            f"attribute {ATTRS_KEY!r} does not describe the {ends.size} episodes", src
        )
    action_key = ACTION if ACTION in arrays else "actions"
    if extras is not None:
        obs_keys = [k for k in extras.get("obs_keys", []) if k in arrays]
        env_meta = json.loads(extras["env_args"]) if extras.get("env_args") else None
    else:
        obs_keys = [k for k in arrays if k != action_key]
        env_meta = None
    name = os.path.basename(src.rstrip(os.sep))
    if env_meta is None:
        env_meta = {
            "env_name": name[: -len(".zarr")] if name.endswith(".zarr") else name,
            "type": ENV_TYPE_GYM,
            "env_kwargs": {
                "replay_buffer": name,
                "note": "placeholder: a replay buffer names no environment",
            },
        }
    data_attrs: dict[str, Any] = {"source_format": "zarr_replay_buffer"}
    if extras is not None:
        data_attrs.update(extras.get("data_attrs") or {})
    final = {
        k[len(FINAL_OBS) :]: root["meta"][k]
        for k in root["meta"].array_keys()
        if k.startswith(FINAL_OBS)
    }
    starts = np.concatenate([[0], ends[:-1]])
    names: list[str] = []
    with DatasetWriter(
        out,
        env_meta=env_meta,
        atomic=True,
        overwrite=overwrite,
        data_attrs=data_attrs,
        image_compression=image_compression,
    ) as writer:
        for i, (a, b) in enumerate(zip(starts, ends)):
            a, b = int(a), int(b)
            n = b - a
            obs = {k: arrays[k][a:b] for k in obs_keys}
            actions = arrays[action_key][a:b]
            rec = DemoRecord(
                name=f"demo_{i}",
                actions=actions.reshape(n, -1) if actions.ndim == 1 else actions,
                rewards=arrays[REWARDS][a:b] if extras is not None else np.zeros(n),
                dones=arrays[DONES][a:b] if extras is not None else _last_done(n),
                obs=obs,
                next_obs_mode=SHIFT,
                final_obs={k: v[-1] for k, v in obs.items()},
            )
            if extras is not None:
                info = extras["demos"][i]
                rec.name = str(info["name"])
                rec.attrs = {k: _from_json_value(v) for k, v in (info.get("attrs") or {}).items()}
                rec.next_obs_mode = info.get("next_obs", NONE)
                if STATES in arrays:
                    rec.states = arrays[STATES][a:b]
                rec.action_dict = {
                    k[len(ACTION_DICT) :]: arrays[k][a:b]
                    for k in arrays
                    if k.startswith(ACTION_DICT)
                }
                if rec.next_obs_mode == SHIFT:
                    rec.final_obs = {k: final[k][i] for k in obs_keys if k in final}
                elif rec.next_obs_mode == STORED:
                    rec.next_obs = {k: arrays[NEXT_OBS + k][a:b] for k in obs_keys}
                else:
                    rec.final_obs = {}
            else:
                rec.attrs = {"ep_meta": json.dumps({"replay_buffer_episode": i})}
            names.append(write_demo(writer, rec))
            if progress is not None:
                progress(i + 1, int(ends.size))
        if extras is not None:
            filter_keys = keys_among(extras.get("filter_keys") or {}, names)
        else:
            filter_keys = train_valid_keys(names, valid_ratio, seed)
        for key, members in filter_keys.items():
            writer.set_filter_key(key, members)
    return ZarrImportResult(
        out=out,
        demos=len(names),
        steps=int(ends[-1]),
        obs_keys=obs_keys,
        env_name=str(env_meta.get("env_name", "")),
        filter_keys={k: len(v) for k, v in filter_keys.items()},
        restored_from_export=extras is not None,
    )


def _last_done(n: int) -> np.ndarray:
    dones = np.zeros(n, dtype=np.int64)
    dones[-1] = 1
    return dones
