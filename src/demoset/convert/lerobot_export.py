"""robomimic-layout files out to LeRobot datasets (codebase version v3.0, or v2.1).

One episode per demo, one frame row per step (see `lerobot_layout` for the layout):
- low-dim `obs/<key>` -> `observation.<key>` with its own dtype, so values are bit for bit;
  `observation.state` is also written, the float32 concatenation of the low-dim keys (or
  of `state_keys`), which LeRobot's policies read;
- `obs/<cam>_image` (uint8, 3 channels) -> `observation.images.<cam>`, MP4 video encoded
  with PyAV (`video_av.CODECS`); the PSNR of the decoded frames is measured after writing;
- `actions` -> `action`, `rewards` -> `next.reward`, `dones` -> `next.done` (bool);
- task: the `lang` of the demo's ep_meta, else `task` or the env name.

What LeRobot has no field for goes to `meta/demoset.hdf5`, which LeRobot never reads:
env_args, filter keys, /data attributes, demo names and attributes (model_file, ep_meta),
states, action_dict, exact dones, the final next_obs row (or whole next_obs when it is
not obs shifted by one) and observations no LeRobot feature holds (e.g. float depth).
`convert_lerobot` reads it back, so robomimic -> LeRobot -> robomimic keeps every value
(images exactly with a lossless codec, within the reported PSNR otherwise).

The dataset folder is written beside the target under a temporary name and renamed at
the end: it appears complete or not at all.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from demoset.convert import lerobot_layout as L
from demoset.convert.demo_record import (
    STORED,
    DemoRecord,
    check_export_target,
    demos_to_export,
    filter_keys_of,
    language_instruction,
    plain_data_attrs,
    read_demo,
)
from demoset.convert.video_av import DEFAULT_CODEC, PsnrMeter, VideoEncoder, codec, iter_frames
from demoset.errors import ConversionError
from demoset.format import open_dataset
from demoset.fsutil import replace_folder


@dataclass
class VideoReport:
    """How one camera key came out of the encoder."""

    feature: str
    frames: int
    bytes: int
    psnr: float
    """Over all frames (inf when every pixel came back exactly)."""
    min_frame_psnr: float
    """Of the worst frame."""


@dataclass
class LeRobotExportResult:
    """What `export_lerobot` wrote."""

    dataset_dir: str
    codebase_version: str
    episodes: int
    frames: int
    fps: int
    video_codec: str
    lossless: bool
    features: list[str] = field(default_factory=list)
    videos: dict[str, VideoReport] = field(default_factory=dict)
    extra_obs_keys: list[str] = field(default_factory=list)
    """Observations kept only in meta/demoset.hdf5 (no LeRobot feature holds them)."""
    tasks: list[str] = field(default_factory=list)
    bytes: int = 0
    """Size of the written folder."""


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConversionError(
            "LeRobot datasets need pyarrow (pip install 'demoset[lerobot]')"
        ) from None
    return pa, pq


def _hf_feature(dtype: str, shape: tuple[int, ...]) -> dict:
    value = {"dtype": dtype, "_type": "Value"}
    if tuple(shape) == (1,):
        return value
    return {"feature": value, "length": int(shape[0]), "_type": "List"}


def _column(pa, arr: np.ndarray):
    """A parquet column for (N,) or (N, d) values: scalars or fixed-size lists."""
    if arr.ndim == 1:
        return pa.array(arr)
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, arr.shape[1])


# --------------------------------------------------------------------------- statistics
class _LowDimStats:
    """Exact statistics of a low-dim feature: all values are kept (they are small)."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        self.parts.append(values.reshape(values.shape[0], -1))

    def result(self) -> dict:
        v = np.concatenate(self.parts).astype(np.float64)
        out = {
            "min": v.min(axis=0),
            "max": v.max(axis=0),
            "mean": v.mean(axis=0),
            "std": v.std(axis=0),
            "count": np.array([v.shape[0]]),
        }
        for q in L.QUANTILES:
            out[f"q{round(q * 100):02d}"] = np.quantile(v, q, axis=0)
        return {k: x.tolist() for k, x in out.items()}


class _ImageStats:
    """Per-channel statistics of frames scaled to [0, 1], from exact 256-bin histograms."""

    def __init__(self, channels: int) -> None:
        self.hist = np.zeros((channels, 256), dtype=np.int64)

    def add(self, frames: np.ndarray) -> None:
        for c in range(self.hist.shape[0]):
            self.hist[c] += np.bincount(frames[..., c].reshape(-1), minlength=256)

    def result(self, frames: int) -> dict:
        levels = np.arange(256) / 255.0
        out: dict[str, list] = {k: [] for k in ("min", "max", "mean", "std")}
        quant: dict[str, list] = {f"q{round(q * 100):02d}": [] for q in L.QUANTILES}
        for h in self.hist:
            total = h.sum()
            nz = np.nonzero(h)[0]
            mean = float((h * levels).sum() / total)
            out["min"].append([[float(levels[nz[0]])]])
            out["max"].append([[float(levels[nz[-1]])]])
            out["mean"].append([[mean]])
            out["std"].append([[float(math.sqrt((h * (levels - mean) ** 2).sum() / total))]])
            cum = np.cumsum(h)
            for q in L.QUANTILES:
                idx = int(np.searchsorted(cum, q * total, side="left"))
                quant[f"q{round(q * 100):02d}"].append([[float(levels[min(idx, 255)])]])
        return {**out, "count": [frames], **quant}


# --------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    lowdim: dict[str, str]  # obs key -> feature
    images: dict[str, str]  # obs key -> feature
    extra: list[str]  # obs keys kept only in the extras file
    state_keys: list[str]
    features: dict[str, dict]
    shapes: dict[str, list[int]]  # per-step shape of each low-dim obs key


def _plan(df, demo: str, state_keys: list[str] | None, fps: int, codec_name: str) -> _Plan:
    obs_info = df.obs_keys(demo)
    act = df.array_keys(demo).get("actions")
    if act is None:
        raise ConversionError("no actions", df.path, f"/data/{demo}/actions")
    lowdim, images, extra = {}, {}, []
    for key, info in obs_info.items():
        if info.dtype.kind in "biuf" and len(info.shape) <= 1:
            lowdim[key] = L.lowdim_feature(key)
        elif info.dtype == np.uint8 and len(info.shape) == 3 and info.shape[2] == 3:
            images[key] = L.image_feature(key)
        else:
            extra.append(key)
    taken: dict[str, str] = {}
    for key, feat in [*lowdim.items(), *images.items()]:
        if feat in taken or feat in (L.STATE, L.ACTION, L.REWARD, L.DONE):
            raise ConversionError(
                f"obs keys {taken.get(feat, feat)!r} and {key!r} both map to LeRobot feature {feat!r}",
                df.path,
                f"/data/{demo}/obs",
            )
        taken[feat] = key
    if state_keys is None:
        state_keys = [k for k in lowdim if obs_info[k].dtype.kind == "f"]
    for key in state_keys:
        if key not in lowdim:
            raise ConversionError(
                f"state key {key!r} is not a low-dim observation", df.path, f"/data/{demo}/obs"
            )
    features: dict[str, dict] = {}
    for key, feat in lowdim.items():
        shape = obs_info[key].shape or (1,)
        features[feat] = {"dtype": str(obs_info[key].dtype), "shape": list(shape), "names": None}
    if state_keys:
        names = []
        for key in state_keys:
            dim = int(np.prod(obs_info[key].shape or (1,)))
            names += [key] if dim == 1 else [f"{key}_{i}" for i in range(dim)]
        features[L.STATE] = {"dtype": "float32", "shape": [len(names)], "names": names}
    c = codec(codec_name)
    for key, feat in images.items():
        h, w, ch = obs_info[key].shape
        features[feat] = {
            "dtype": "video",
            "shape": [h, w, ch],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": c.name,
                "video.pix_fmt": c.stored_pix_fmt,
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": ch,
                "has_audio": False,
            },
        }
    features[L.ACTION] = {
        "dtype": str(act.dtype),
        "shape": [int(np.prod(act.shape))],
        "names": None,
    }
    features[L.REWARD] = {"dtype": "float64", "shape": [1], "names": None}
    features[L.DONE] = {"dtype": "bool", "shape": [1], "names": None}
    for name, dtype in L.INDEX_FEATURES.items():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    shapes = {k: list(obs_info[k].shape) for k in lowdim}
    return _Plan(lowdim, images, extra, list(state_keys), features, shapes)


# --------------------------------------------------------------------------- writing
class _Writer:
    """Writes one dataset folder; `finish` returns the result."""

    def __init__(
        self, folder: str, df, plan: _Plan, version: str, fps: int, codec_name: str, crf, task
    ):
        self.pa, self.pq = _pa()
        self.folder = folder
        self.df = df
        self.plan = plan
        self.version = version
        self.fps = fps
        self.codec_name = codec_name
        self.crf = crf
        self.default_task = task
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.episode_stats: list[dict] = []
        self.frames = 0
        self.rows: list[dict[str, np.ndarray]] = []
        self.rows_bytes = 0
        self.data_cf = (0, 0)
        self.video_cf: dict[str, tuple[int, int]] = dict.fromkeys(plan.images, (0, 0))
        self.encoders: dict[str, VideoEncoder] = {}
        self.video_members: dict[str, list[tuple[str, str]]] = {}  # path -> [(demo, key)]
        self.meters: dict[str, PsnrMeter] = {k: PsnrMeter() for k in plan.images}
        self.video_bytes = dict.fromkeys(plan.images, 0)
        self.lowdim_stats: dict[str, _LowDimStats] = {}
        self.image_stats: dict[str, _ImageStats] = {k: _ImageStats(3) for k in plan.images}
        self.extras = h5py.File(os.path.join(folder, L.EXTRAS_PATH), "w")

    # -- paths
    def _data_path(self, ep: int) -> str:
        if self.version == L.V30:
            c, f = self.data_cf
            return L.DATA_PATH_V30.format(chunk_index=c, file_index=f)
        return L.DATA_PATH_V21.format(episode_chunk=ep // L.CHUNKS_SIZE, episode_index=ep)

    def _video_path(self, key: str, ep: int) -> str:
        feat = self.plan.images[key]
        if self.version == L.V30:
            c, f = self.video_cf[key]
            return L.VIDEO_PATH_V30.format(video_key=feat, chunk_index=c, file_index=f)
        return L.VIDEO_PATH_V21.format(
            episode_chunk=ep // L.CHUNKS_SIZE, video_key=feat, episode_index=ep
        )

    # -- one episode
    def add(self, rec: DemoRecord) -> None:
        ep = len(self.episodes)
        n = rec.steps
        task = language_instruction(rec.attrs) or self.default_task
        task_index = self.tasks.setdefault(task, len(self.tasks))
        cols: dict[str, np.ndarray] = {}
        for key, feat in self.plan.lowdim.items():
            arr = rec.obs[key].reshape(n, -1)
            cols[feat] = arr[:, 0] if arr.shape[1] == 1 and self._scalar(feat) else arr
        if self.plan.state_keys:
            cols[L.STATE] = np.concatenate(
                [rec.obs[k].reshape(n, -1) for k in self.plan.state_keys], axis=1
            ).astype(np.float32)
        actions = rec.actions.reshape(n, -1)
        if str(actions.dtype) != self.plan.features[L.ACTION]["dtype"]:
            raise ConversionError(
                f"actions dtype {actions.dtype} differs from the first demo's",
                self.df.path,
                f"/data/{rec.name}/actions",
            )
        cols[L.ACTION] = actions
        cols[L.REWARD] = rec.rewards.reshape(n).astype(np.float64)
        cols[L.DONE] = rec.dones.reshape(n) != 0
        frame_index = np.arange(n, dtype=np.int64)
        cols["timestamp"] = (frame_index / self.fps).astype(np.float32)
        cols["frame_index"] = frame_index
        cols["episode_index"] = np.full(n, ep, dtype=np.int64)
        cols["index"] = np.arange(self.frames, self.frames + n, dtype=np.int64)
        cols["task_index"] = np.full(n, task_index, dtype=np.int64)
        for feat, arr in cols.items():
            self.lowdim_stats.setdefault(feat, _LowDimStats()).add(arr)
        if self.version == L.V21:  # v2.1 keeps per-episode statistics
            ep_stats = {}
            for feat, arr in cols.items():
                one = _LowDimStats()
                one.add(arr)
                ep_stats[feat] = one.result()
            for key, feat in self.plan.images.items():
                one_img = _ImageStats(3)
                one_img.add(rec.obs[key])
                ep_stats[feat] = one_img.result(n)
            self.episode_stats.append({"episode_index": ep, "stats": ep_stats})
        row = {
            "episode_index": ep,
            "tasks": [task],
            "length": n,
            "dataset_from_index": self.frames,
            "dataset_to_index": self.frames + n,
        }
        row.update(self._add_rows(cols, ep))
        for key in self.plan.images:
            row.update(self._add_video(key, rec, ep))
        if self.version == L.V30:
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
        self.episodes.append(row)
        self._extras(rec, ep)
        self.frames += n

    def _scalar(self, feat: str) -> bool:
        return self.plan.features[feat]["shape"] == [1]

    def _add_rows(self, cols: dict[str, np.ndarray], ep: int) -> dict:
        where = {}
        if self.version == L.V30:
            c, f = self.data_cf
            where = {"data/chunk_index": c, "data/file_index": f}
        self.rows.append(cols)
        self.rows_bytes += sum(a.nbytes for a in cols.values())
        if self.version == L.V21:
            self._flush_rows(self._data_path(ep))
        elif self.rows_bytes >= L.DATA_FILE_MB * 1e6:
            self._flush_rows(self._data_path(ep))
            self.data_cf = L.next_chunk_file(*self.data_cf, L.CHUNKS_SIZE)
        return where

    def _flush_rows(self, rel: str) -> None:
        if not self.rows:
            return
        pa = self.pa
        names = [f for f in self.plan.features if self.plan.features[f]["dtype"] != "video"]
        arrays = [_column(pa, np.concatenate([r[f] for r in self.rows])) for f in names]
        hf = {
            f: _hf_feature(self.plan.features[f]["dtype"], self.plan.features[f]["shape"])
            for f in names
        }
        schema = pa.schema(
            [pa.field(f, a.type) for f, a in zip(names, arrays)],
            metadata={"huggingface": json.dumps({"info": {"features": hf}})},
        )
        path = os.path.join(self.folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)
        self.rows, self.rows_bytes = [], 0

    def _add_video(self, key: str, rec: DemoRecord, ep: int) -> dict:
        frames = rec.obs[key]
        feat = self.plan.images[key]
        rel = self._video_path(key, ep)
        enc = self.encoders.get(key)
        if enc is None:
            path = os.path.join(self.folder, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            h, w, _ = frames.shape[1:]
            enc = self.encoders[key] = VideoEncoder(path, self.fps, h, w, self.codec_name, self.crf)
            self.video_members[path] = []
        start = enc.frames
        enc.add(frames)
        self.image_stats[key].add(frames)
        self.video_members[enc.path].append((rec.name, key))
        out = {}
        if self.version == L.V30:
            c, f = self.video_cf[key]
            out = {
                f"videos/{feat}/chunk_index": c,
                f"videos/{feat}/file_index": f,
                f"videos/{feat}/from_timestamp": start / self.fps,
                f"videos/{feat}/to_timestamp": enc.frames / self.fps,
            }
        if self.version == L.V21 or enc.bytes >= L.VIDEO_FILE_MB * 1e6:
            self._close_video(key)
            if self.version == L.V30:
                self.video_cf[key] = L.next_chunk_file(*self.video_cf[key], L.CHUNKS_SIZE)
        return out

    def _close_video(self, key: str) -> None:
        enc = self.encoders.pop(key)
        enc.close()
        self.video_bytes[key] += os.path.getsize(enc.path)
        # measure what the codec lost: decode the file and compare with the source frames
        decoded = iter_frames(enc.path)
        for demo, k in self.video_members.pop(enc.path):
            original = self.df.read(demo, f"obs/{k}")
            got = [next(decoded)[1] for _ in range(original.shape[0])]
            self.meters[k].add(original, np.stack(got))
        decoded.close()

    def _extras(self, rec: DemoRecord, ep: int) -> None:
        grp = self.extras.create_group(f"episode_{ep}")
        grp.attrs["demo"] = rec.name
        grp.attrs["next_obs"] = rec.next_obs_mode
        attrs = grp.create_group("attrs")
        for k, v in rec.attrs.items():
            attrs.attrs[k] = v
        grp.create_dataset("dones", data=rec.dones)
        grp.create_dataset("rewards", data=rec.rewards)
        if rec.states is not None:
            grp.create_dataset("states", data=rec.states)
        for name, arrays in (
            ("action_dict", rec.action_dict),
            ("final_obs", rec.final_obs),
            ("next_obs", rec.next_obs if rec.next_obs_mode == STORED else {}),
            ("obs", {k: rec.obs[k] for k in self.plan.extra}),
        ):
            if arrays:
                sub = grp.create_group(name)
                for k, v in arrays.items():
                    sub.create_dataset(k, data=v, **_image_chunks(v))

    # -- the end
    def finish(self, env_meta, filter_keys, data_attrs, source: str) -> None:
        self._flush_rows(self._data_path(len(self.episodes) - 1))
        for key in list(self.encoders):
            self._close_video(key)
        x = self.extras
        x.attrs["format_version"] = 1
        x.attrs["env_args"] = env_meta.to_json() if env_meta is not None else ""
        x.attrs["filter_keys"] = json.dumps(filter_keys)
        x.attrs["data_attrs"] = json.dumps(data_attrs)
        x.attrs["source_file"] = os.path.basename(source)
        x.attrs["obs_features"] = json.dumps(
            {
                **{f: k for k, f in self.plan.lowdim.items()},
                **{f: k for k, f in self.plan.images.items()},
            }
        )
        x.attrs["state_keys"] = json.dumps(self.plan.state_keys)
        x.attrs["obs_shapes"] = json.dumps(self.plan.shapes)
        x.close()
        stats = {f: s.result() for f, s in self.lowdim_stats.items()}
        for key, feat in self.plan.images.items():
            stats[feat] = self.image_stats[key].result(self.frames)
        _write_json(os.path.join(self.folder, L.STATS_PATH), stats)
        task_list = sorted(self.tasks, key=self.tasks.get)
        info: dict[str, Any] = {
            "codebase_version": self.version,
            "robot_type": _robot_type(env_meta),
            "total_episodes": len(self.episodes),
            "total_frames": self.frames,
            "total_tasks": len(task_list),
        }
        if self.version == L.V21:
            info["total_videos"] = len(self.episodes) * len(self.plan.images)
            info["total_chunks"] = (len(self.episodes) - 1) // L.CHUNKS_SIZE + 1
            info["chunks_size"] = L.CHUNKS_SIZE
        else:
            info["chunks_size"] = L.CHUNKS_SIZE
            info["data_files_size_in_mb"] = L.DATA_FILE_MB
            info["video_files_size_in_mb"] = L.VIDEO_FILE_MB
        info["fps"] = self.fps
        info["splits"] = {"train": f"0:{len(self.episodes)}"}
        v30 = self.version == L.V30
        info["data_path"] = L.DATA_PATH_V30 if v30 else L.DATA_PATH_V21
        info["video_path"] = (
            (L.VIDEO_PATH_V30 if v30 else L.VIDEO_PATH_V21) if self.plan.images else None
        )
        info["features"] = self.plan.features
        _write_json(os.path.join(self.folder, L.INFO_PATH), info)
        if v30:
            self._write_v30_meta(task_list, stats)
        else:
            self._write_v21_meta(task_list)

    def _write_v30_meta(self, task_list: list[str], stats: dict) -> None:
        pa, pq = self.pa, self.pq
        pandas_meta = {
            "index_columns": ["__index_level_0__"],
            "column_indexes": [
                {
                    "name": None,
                    "field_name": None,
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": {"encoding": "UTF-8"},
                }
            ],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": None,
                    "field_name": "__index_level_0__",
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.0",
        }
        tasks = pa.table(
            {
                "task_index": pa.array(np.arange(len(task_list), dtype=np.int64)),
                "__index_level_0__": pa.array(task_list, type=pa.string()),
            }
        ).replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
        pq.write_table(tasks, os.path.join(self.folder, L.TASKS_PARQUET))
        columns: dict[str, list] = {}
        for row in self.episodes:
            for k, v in row.items():
                columns.setdefault(k, []).append(v)
        table = pa.table(
            {
                k: pa.array(v, type=pa.list_(pa.string())) if k == "tasks" else pa.array(v)
                for k, v in columns.items()
            }
        )
        path = os.path.join(self.folder, L.EPISODES_PATH_V30.format(chunk_index=0, file_index=0))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(table, path)

    def _write_v21_meta(self, task_list: list[str]) -> None:
        with open(os.path.join(self.folder, L.TASKS_JSONL), "w", encoding="utf-8") as f:
            for i, task in enumerate(task_list):
                f.write(json.dumps({"task_index": i, "task": task}) + "\n")
        with open(os.path.join(self.folder, L.EPISODES_JSONL), "w", encoding="utf-8") as f:
            for row in self.episodes:
                f.write(
                    json.dumps(
                        {
                            "episode_index": row["episode_index"],
                            "tasks": row["tasks"],
                            "length": row["length"],
                        }
                    )
                    + "\n"
                )
        with open(os.path.join(self.folder, L.EPISODES_STATS_JSONL), "w", encoding="utf-8") as f:
            for row in self.episode_stats:
                f.write(json.dumps(row) + "\n")


def _image_chunks(arr: np.ndarray) -> dict:
    if arr.ndim == 4:
        return {"chunks": (1, *arr.shape[1:]), "compression": "gzip", "compression_opts": 4}
    return {}


def _robot_type(env_meta) -> str | None:
    if env_meta is None:
        return None
    robots = env_meta.env_kwargs.get("robots") if isinstance(env_meta.env_kwargs, dict) else None
    if isinstance(robots, list) and robots and all(isinstance(r, str) for r in robots):
        return "+".join(robots)
    if isinstance(robots, str):
        return robots
    return None


def _write_json(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=4, ensure_ascii=False, allow_nan=True)


def _folder_bytes(folder: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    )


def export_lerobot(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    fps: int = 20,
    video_codec: str = DEFAULT_CODEC,
    crf: int | None = None,
    codebase_version: str = L.V30,
    filter_key: str | None = None,
    task: str | None = None,
    state_keys: list[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LeRobotExportResult:
    """Write the robomimic-layout file `dataset` as a LeRobot dataset folder `out`.

    `fps` sets the timestamps (robosuite's default control rate is 20 Hz). `video_codec`
    is one of `video_av.CODECS` ("h264-lossless" keeps frames exactly); `crf`
    overrides a lossy codec's quality. `state_keys` lists the low-dim keys concatenated
    into observation.state (default: every float one; [] for none).
    """
    dataset = os.fspath(dataset)
    target = os.path.abspath(os.fspath(out))
    if codebase_version not in L.VERSIONS:
        raise ConversionError(
            f"codebase version {codebase_version!r} cannot be written (choose {' or '.join(L.VERSIONS)})"
        )
    chosen = codec(video_codec)
    if not isinstance(fps, int) or fps <= 0:
        raise ConversionError(f"fps must be a positive integer, got {fps!r}")
    check_export_target(target, overwrite)
    parent = os.path.dirname(target)
    with open_dataset(dataset) as df:
        demos = demos_to_export(df, dataset, filter_key)
        plan = _plan(df, demos[0], state_keys, fps, video_codec)
        env_meta = df.env_meta
        default_task = task or (env_meta.env_name if env_meta is not None else "demo")
        tmp = tempfile.mkdtemp(
            prefix=f".{os.path.basename(target)}.", suffix=".partial", dir=parent
        )
        try:
            os.makedirs(os.path.join(tmp, "meta"))
            writer = _Writer(tmp, df, plan, codebase_version, fps, video_codec, crf, default_task)
            try:
                keys = [*plan.lowdim, *plan.images, *plan.extra]
                for i, demo in enumerate(demos):
                    rec = read_demo(df, demo, keys)
                    writer.add(rec)
                    if progress is not None:
                        progress(i + 1, len(demos))
                writer.finish(env_meta, filter_keys_of(df, demos), plain_data_attrs(df), dataset)
            finally:
                for enc in writer.encoders.values():
                    enc.abort()
                if writer.extras.id.valid:
                    writer.extras.close()
            replace_folder(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    videos = {
        key: VideoReport(
            feat,
            writer.meters[key].frames,
            writer.video_bytes[key],
            writer.meters[key].psnr,
            writer.meters[key].min_frame_psnr,
        )
        for key, feat in plan.images.items()
    }
    return LeRobotExportResult(
        dataset_dir=target,
        codebase_version=codebase_version,
        episodes=len(writer.episodes),
        frames=writer.frames,
        fps=fps,
        video_codec=video_codec,
        lossless=chosen.lossless,
        features=[f for f in plan.features if f not in L.INDEX_FEATURES],
        videos=videos,
        extra_obs_keys=plan.extra,
        tasks=sorted(writer.tasks, key=writer.tasks.get),
        bytes=_folder_bytes(target),
    )
