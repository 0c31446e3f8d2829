"""LeRobot datasets (codebase v2.0, v2.1, v3.0) into the robomimic layout.

One demo per episode (see `lerobot_layout` for LeRobot's layout):
- obs keys from feature names: `observation.<key>` -> `<key>`, camera features
  `observation.images.<cam>` -> `<cam>_image`, frames decoded with PyAV from the MP4 file
  at `from_timestamp + timestamp` (LeRobot's own rule; tolerance 1e-4 s);
  next_obs is obs shifted by one step (the last step repeats the last observation);
- `action` -> actions, `next.reward` -> rewards (zeros when absent), `next.done` ->
  dones (int64; 1 on the last step when absent); other numeric features become obs;
- the episode's first task is the demo's ep_meta `lang`;
- env_args: LeRobot records no simulator, so a gym-type (2) placeholder whose env_name is
  the robot type (or the folder name) and whose env_kwargs say where it came from; it
  names no environment that robomimic could create.
- filter keys `train`/`valid` split as robomimic's script splits (ratio `valid_ratio`),
  plus any other split the dataset's info.json names.

A dataset written by `export_lerobot` carries `meta/demoset.hdf5`; then the original demo
names, attributes, env_args, filter keys, states, action_dict, dones and next_obs come
back from it.

Everything but the frames is read and checked before the output file is created: a
folder that is not a LeRobot dataset, an unknown codebase version, a missing data or
video file, or an episode whose timestamps do not step by 1 / fps fails with one error
naming the file, and nothing is written.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demoset.convert import lerobot_layout as L
from demoset.convert.demo_record import NONE, SHIFT, STORED, DemoRecord, write_demo
from demoset.convert.video_av import iter_frames
from demoset.errors import ConversionError, DemosetError
from demoset.format import ENV_TYPE_GYM, READ_ERRORS, DatasetWriter, open_h5
from demoset.masks import keys_among, train_valid_keys

RESERVED = {L.ACTION, L.REWARD, L.DONE, *L.INDEX_FEATURES}


@dataclass
class LeRobotImportResult:
    """What `convert_lerobot` wrote."""

    out: str
    codebase_version: str
    demos: int
    frames: int
    fps: float
    obs_keys: list[str] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)
    env_name: str = ""
    filter_keys: dict[str, int] = field(default_factory=dict)
    restored_from_export: bool = False


# --------------------------------------------------------------------------- metadata
def _pa():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConversionError(
            "LeRobot datasets need pyarrow (pip install 'demoset[lerobot]')"
        ) from None
    return pq


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConversionError("file is missing", path) from None
    except (OSError, ValueError) as exc:
        raise ConversionError(f"not readable JSON ({exc})", path) from None


def _load_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        raise ConversionError("file is missing", path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ConversionError(f"line {number} is not JSON", path) from None
                if not isinstance(row, dict):
                    raise ConversionError(f"line {number} is not a JSON object", path)
                rows.append(row)
    return rows


def read_info(root: str) -> dict:
    """meta/info.json of the dataset folder `root`, checked: version, fps, features."""
    if not os.path.isdir(root):
        raise ConversionError(
            "not a folder (a LeRobot dataset is a folder with meta/info.json)", root
        )
    path = os.path.join(root, L.INFO_PATH)
    if not os.path.isfile(path):
        raise ConversionError(f"not a LeRobot dataset: no {L.INFO_PATH}", root)
    info = _load_json(path)
    if not isinstance(info, dict):
        raise ConversionError("not a JSON object", path)
    version = info.get("codebase_version")
    if version not in L.READABLE_VERSIONS:
        raise ConversionError(
            f"unknown codebase_version {version!r} (demoset reads {', '.join(L.READABLE_VERSIONS)})",
            path,
        )
    fps = info.get("fps")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0:
        raise ConversionError(f"fps {fps!r} is not a positive number", path)
    features = info.get("features")
    if not isinstance(features, dict) or not all(
        isinstance(v, dict) and "dtype" in v and "shape" in v for v in features.values()
    ):
        raise ConversionError("features is not a map of {dtype, shape}", path)
    if L.ACTION not in features:
        raise ConversionError(f"no '{L.ACTION}' feature: robomimic demos need actions", path)
    for key in ("data_path",):
        if not isinstance(info.get(key), str):
            raise ConversionError(f"no {key} template", path)
    return info


def _episodes(root: str, version: str, pq) -> list[dict]:
    if version == L.V30:
        paths = sorted(glob.glob(os.path.join(root, L.EPISODES_DIR, "*", "*.parquet")))
        if not paths:
            raise ConversionError(
                f"no episode files ({L.EPISODES_DIR}/chunk-*/file-*.parquet)", root
            )
        rows: list[dict] = []
        for path in paths:
            try:
                table = pq.read_table(path)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
                raise ConversionError(f"not a readable parquet file ({exc})", path) from None
            keep = [c for c in table.column_names if not c.startswith("stats/")]
            rows += table.select(keep).to_pylist()
    else:
        rows = _load_jsonl(os.path.join(root, L.EPISODES_JSONL))
    for row in rows:
        if not isinstance(row.get("episode_index"), int) or not isinstance(row.get("length"), int):
            raise ConversionError("an episode without episode_index/length", root)
    return sorted(rows, key=lambda r: r["episode_index"])


def _tasks(root: str, version: str, pq) -> dict[int, str]:
    if version == L.V30:
        path = os.path.join(root, L.TASKS_PARQUET)
        if not os.path.isfile(path):
            return {}
        try:
            table = pq.read_table(path).to_pydict()
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"not a readable parquet file ({exc})", path) from None
        text = table.get("task") or table.get("__index_level_0__") or []
        return {int(i): str(t) for i, t in zip(table.get("task_index", []), text)}
    path = os.path.join(root, L.TASKS_JSONL)
    if not os.path.isfile(path):
        return {}
    return {int(r["task_index"]): str(r.get("task", "")) for r in _load_jsonl(path)}


# --------------------------------------------------------------------------- frame data
def _data_files(root: str, info: dict, episodes: list[dict]) -> dict[str, list[int]]:
    """data file path -> the episode indices it holds."""
    template = info["data_path"]
    chunks = int(info.get("chunks_size") or L.CHUNKS_SIZE)
    out: dict[str, list[int]] = {}
    for row in episodes:
        ep = row["episode_index"]
        try:
            if info["codebase_version"] == L.V30:
                rel = template.format(
                    chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                )
            else:
                rel = template.format(episode_chunk=ep // chunks, episode_index=ep)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConversionError(
                f"episode {ep}: cannot place its data file ({exc})", os.path.join(root, L.INFO_PATH)
            ) from None
        out.setdefault(os.path.join(root, rel), []).append(ep)
    return out


def _video_path(root: str, info: dict, row: dict, key: str) -> tuple[str, float]:
    """(MP4 path, start time of the episode in it) for one camera of one episode."""
    template = info.get("video_path")
    ep = row["episode_index"]
    if not isinstance(template, str):
        raise ConversionError(
            f"{key} is a video feature but video_path is not set", os.path.join(root, L.INFO_PATH)
        )
    try:
        if info["codebase_version"] == L.V30:
            rel = template.format(
                video_key=key,
                chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"],
            )
            start = float(row.get(f"videos/{key}/from_timestamp") or 0.0)
        else:
            chunks = int(info.get("chunks_size") or L.CHUNKS_SIZE)
            rel = template.format(episode_chunk=ep // chunks, video_key=key, episode_index=ep)
            start = 0.0
    except (KeyError, IndexError, ValueError) as exc:
        raise ConversionError(
            f"episode {ep}: no video entry for {key} ({exc})", os.path.join(root, L.EPISODES_DIR)
        ) from None
    return os.path.join(root, rel), start


def _read_columns(path: str, columns: list[str], pq) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise ConversionError("data file is missing", path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"not a readable parquet file ({exc})", path) from None
    out = {}
    for name in columns:
        if name not in table.column_names:
            raise ConversionError(f"no column {name!r} (info.json lists it)", path)
        col = table.column(name).combine_chunks()
        values = col.flatten() if hasattr(col, "flatten") and col.type.num_fields == 1 else col
        arr = np.asarray(values.to_numpy(zero_copy_only=False))
        if arr.dtype == object:
            try:
                arr = np.stack([np.asarray(v) for v in col.to_pylist()])
            except ValueError:
                raise ConversionError(
                    f"column {name!r} has rows of different sizes", path
                ) from None
        elif values is not col:
            arr = arr.reshape(len(col), -1)
        out[name] = arr
    return out


def _episode_rows(info: dict, root: str, episodes: list[dict], columns: list[str], pq):
    """{episode index: {column: array}}, each checked: length and timestamps."""
    fps = float(info["fps"])
    lengths = {r["episode_index"]: r["length"] for r in episodes}
    per_episode: dict[int, dict[str, np.ndarray]] = {}
    for path, eps in _data_files(root, info, episodes).items():
        cols = _read_columns(
            path, sorted({*columns, "episode_index", "frame_index", "timestamp"}), pq
        )
        ep_col = cols["episode_index"].reshape(-1)
        for ep in eps:
            sel = np.nonzero(ep_col == ep)[0]
            if sel.size != lengths[ep]:
                raise ConversionError(
                    f"episode {ep} has {sel.size} frames; the episode metadata says {lengths[ep]}",
                    path,
                )
            order = sel[np.argsort(cols["frame_index"].reshape(-1)[sel], kind="stable")]
            rows = {k: v[order] for k, v in cols.items()}
            ts = rows["timestamp"].reshape(-1).astype(np.float64)
            if ts.size > 1:
                steps = np.diff(ts)
                bad = np.nonzero(np.abs(steps - 1.0 / fps) > L.TIMESTAMP_TOLERANCE_S)[0]
                if bad.size:
                    i = int(bad[0])
                    raise ConversionError(
                        f"episode {ep}: timestamps step by {steps[i]:.6g} s after frame {i}, "
                        f"not 1/fps = {1.0 / fps:.6g} s (fps {info['fps']})",
                        path,
                    )
            per_episode[ep] = rows
    return per_episode


class _VideoReader:
    """Frames of one camera at given times, reading its MP4 files front to back."""

    def __init__(self, key: str, tolerance: float):
        self.key = key
        self.tolerance = tolerance
        self.path: str | None = None
        self.frames: Iterator[tuple[float, np.ndarray]] | None = None
        self.pending: tuple[float, np.ndarray] | None = None
        self.position = -np.inf

    def read(self, path: str, times: np.ndarray, episode: int) -> np.ndarray:
        if path != self.path or times[0] < self.position - self.tolerance:
            # another file, or an episode earlier in this one: decode from the start
            self.close()
            self.path, self.frames, self.pending = path, iter_frames(path), None
        self.position = float(times[-1])
        out = []
        for t in times:
            while True:
                if self.pending is None:
                    try:
                        self.pending = next(self.frames)
                    except StopIteration:
                        raise ConversionError(
                            f"no frame at {t:.4f} s for episode {episode} (the video ends before)",
                            path,
                        ) from None
                ft, frame = self.pending
                if ft < t - self.tolerance:
                    self.pending = None
                    continue
                if ft > t + self.tolerance:
                    raise ConversionError(
                        f"no frame at {t:.4f} s for episode {episode} (next frame at {ft:.4f} s)",
                        path,
                    )
                out.append(frame)
                self.pending = None
                break
        return np.stack(out)

    def close(self) -> None:
        if self.frames is not None:
            self.frames.close()
        self.frames = None


# --------------------------------------------------------------------------- extras
def _read_extras(root: str, episodes: int) -> dict | None:
    """What export_lerobot kept in meta/demoset.hdf5, or None when there is no such file."""
    path = os.path.join(root, L.EXTRAS_PATH)
    if not os.path.isfile(path):
        return None
    try:
        with open_h5(path, "r") as h5:
            attrs = {k: h5.attrs[k] for k in h5.attrs.keys()}
            eps = []
            for i in range(episodes):
                if f"episode_{i}" not in h5:
                    raise ConversionError(f"no episode_{i} (the dataset has {episodes})", path)
                eps.append(_read_group(h5[f"episode_{i}"]))
    except DemosetError:
        raise
    except READ_ERRORS as exc:
        raise ConversionError(f"cannot read demoset's extras ({exc})", path) from None

    def text(key: str, default: str = "") -> str:
        v = attrs.get(key, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    try:
        return {
            "env_args": text("env_args"),
            "filter_keys": json.loads(text("filter_keys", "{}")),
            "data_attrs": json.loads(text("data_attrs", "{}")),
            "obs_features": json.loads(text("obs_features", "{}")),
            "state_keys": json.loads(text("state_keys", "[]")),
            "obs_shapes": json.loads(text("obs_shapes", "{}")),
            "episodes": eps,
        }
    except ValueError:
        raise ConversionError("an attribute is not JSON", path) from None


def _read_group(grp) -> dict:
    import h5py

    out: dict[str, Any] = {"@attrs": {k: grp.attrs[k] for k in grp.attrs.keys()}}
    for key in grp.keys():
        obj = grp[key]
        if isinstance(obj, h5py.Group):
            out[key] = _read_group(obj)
        else:
            out[key] = obj[()]
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- converting
def convert_lerobot(
    src: str | os.PathLike,
    out: str | os.PathLike,
    valid_ratio: float = 0.1,
    seed: int = 0,
    image_compression: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LeRobotImportResult:
    """Convert the LeRobot dataset folder `src` into the robomimic-layout file `out`."""
    pq = _pa()
    root = os.path.abspath(os.fspath(src))
    out = os.fspath(out)
    info = read_info(root)
    version = info["codebase_version"]
    features: dict[str, dict] = info["features"]
    episodes = _episodes(root, version, pq)
    if not episodes:
        raise ConversionError("the dataset has no episodes", os.path.join(root, L.INFO_PATH))
    tasks = _tasks(root, version, pq)
    extras = _read_extras(root, len(episodes))
    video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
    image_cols = [k for k, f in features.items() if f["dtype"] == "image"]
    if image_cols:
        raise ConversionError(
            f"image features stored in parquet ({', '.join(image_cols)}) are not supported; "
            "only video features",
            os.path.join(root, L.INFO_PATH),
        )
    numeric = [
        k
        for k, f in features.items()
        if f["dtype"] not in ("video", "image", "string") and k not in L.INDEX_FEATURES
    ]
    # obs keys: the export's own map when there is one, else from the feature names
    if extras is not None:
        obs_map = {f: k for f, k in extras["obs_features"].items() if f in features}
        skip = {L.STATE} if extras["state_keys"] else set()
    else:
        obs_map, skip = {}, set()
        for name in [*numeric, *video_keys]:
            if name in RESERVED:
                continue
            obs_map[name] = L.obs_key_of(name, features[name]["dtype"] == "video")
    obs_map = {f: k for f, k in obs_map.items() if f not in skip}
    if len(set(obs_map.values())) != len(obs_map):
        raise ConversionError(
            "two features map to the same obs key", os.path.join(root, L.INFO_PATH)
        )
    columns = [c for c in numeric if c in RESERVED or c in obs_map]
    rows = _episode_rows(info, root, episodes, columns, pq)
    videos = {}
    for row in episodes:
        for key in video_keys:
            if key not in obs_map:
                continue
            path, start = _video_path(root, info, row, key)
            if not os.path.isfile(path):
                raise ConversionError(
                    f"video file is missing (episode {row['episode_index']}, {key})", path
                )
            videos[(row["episode_index"], key)] = (path, start)

    env_meta = _env_meta(info, root, extras)
    data_attrs: dict[str, Any] = {"source_format": "lerobot", "lerobot_codebase_version": version}
    if extras is not None:
        data_attrs.update(
            {k: v for k, v in extras["data_attrs"].items() if k not in ("total", "env_args")}
        )
    readers = {k: _VideoReader(k, L.TIMESTAMP_TOLERANCE_S) for k in video_keys}
    names: list[str] = []
    frames = 0
    try:
        with DatasetWriter(
            out,
            env_meta=env_meta,
            atomic=True,
            overwrite=overwrite,
            data_attrs=data_attrs,
            image_compression=image_compression,
        ) as writer:
            for i, row in enumerate(episodes):
                ep = row["episode_index"]
                rec = _record(row, rows[ep], obs_map, features, videos, readers, tasks, info)
                if extras is not None:
                    _restore(rec, extras["episodes"][i], extras["obs_shapes"])
                names.append(write_demo(writer, rec))
                frames += rec.steps
                if progress is not None:
                    progress(i + 1, len(episodes))
            filter_keys = _filter_keys(names, info, extras, valid_ratio, seed)
            for name, members in filter_keys.items():
                writer.set_filter_key(name, members)
    finally:
        for reader in readers.values():
            reader.close()
    obs_keys = sorted(obs_map.values())
    if extras is not None:
        obs_keys = sorted({*obs_keys, *extras["episodes"][0].get("obs", {}).keys()} - {"@attrs"})
    return LeRobotImportResult(
        out=out,
        codebase_version=version,
        demos=len(names),
        frames=frames,
        fps=info["fps"],
        obs_keys=obs_keys,
        image_keys=sorted(obs_map[k] for k in video_keys if k in obs_map),
        env_name=env_meta["env_name"],
        filter_keys={k: len(v) for k, v in filter_keys.items()},
        restored_from_export=extras is not None,
    )


def _record(row, cols, obs_map, features, videos, readers, tasks, info) -> DemoRecord:
    ep = row["episode_index"]
    n = int(row["length"])
    obs: dict[str, np.ndarray] = {}
    for feat, key in obs_map.items():
        if features[feat]["dtype"] == "video":
            path, start = videos[(ep, feat)]
            times = start + cols["timestamp"].reshape(-1).astype(np.float64)
            obs[key] = readers[feat].read(path, times, ep)
        else:
            arr = cols[feat]
            obs[key] = arr.reshape(n, -1)
    actions = cols[L.ACTION].reshape(n, -1)
    rewards = cols[L.REWARD].reshape(n) if L.REWARD in cols else np.zeros(n)
    if L.DONE in cols:
        dones = (cols[L.DONE].reshape(n) != 0).astype(np.int64)
    else:
        dones = np.zeros(n, dtype=np.int64)
        dones[-1] = 1
    task_index = int(cols["task_index"].reshape(-1)[0]) if "task_index" in cols else None
    task = tasks.get(task_index) if task_index is not None else None
    listed = row.get("tasks")
    if task is None and isinstance(listed, list) and listed:
        task = str(listed[0])
    ep_meta = {"lerobot_episode_index": ep}
    if task:
        ep_meta["lang"] = task
    return DemoRecord(
        name=f"demo_{ep}",
        actions=actions,
        rewards=rewards,
        dones=dones,
        obs=obs,
        next_obs_mode=SHIFT,
        final_obs={k: v[-1] for k, v in obs.items()},
        attrs={"ep_meta": json.dumps(ep_meta)},
    )


def _restore(rec: DemoRecord, extra: dict, shapes: dict) -> None:
    """Put back what export_lerobot kept beside LeRobot's files."""
    attrs = extra["@attrs"]
    rec.name = _text(attrs.get("demo", rec.name))
    rec.attrs = dict(extra.get("attrs", {}).get("@attrs", {}))
    n = rec.steps
    for key, shape in shapes.items():
        if key in rec.obs:
            rec.obs[key] = rec.obs[key].reshape(n, *shape)
    if "dones" in extra:
        rec.dones = extra["dones"]
    if "rewards" in extra:
        rec.rewards = extra["rewards"]
    rec.states = extra.get("states")
    rec.action_dict = {k: v for k, v in extra.get("action_dict", {}).items() if k != "@attrs"}
    for key, value in extra.get("obs", {}).items():
        if key != "@attrs":
            rec.obs[key] = value
    mode = _text(attrs.get("next_obs", NONE))
    rec.next_obs_mode = mode
    if mode == SHIFT:
        rec.final_obs = {k: v for k, v in extra.get("final_obs", {}).items() if k != "@attrs"}
    elif mode == STORED:
        rec.next_obs = {k: v for k, v in extra.get("next_obs", {}).items() if k != "@attrs"}
    else:
        rec.final_obs = {}


def _env_meta(info: dict, root: str, extras: dict | None) -> dict:
    if extras is not None and extras["env_args"]:
        try:
            env = json.loads(extras["env_args"])
            if isinstance(env, dict):
                return env
        except ValueError:
            pass
    name = os.path.basename(root.rstrip(os.sep))
    robot = info.get("robot_type")
    return {
        "env_name": str(robot) if robot else name,
        "type": ENV_TYPE_GYM,
        "env_kwargs": {
            "lerobot_dataset": name,
            "fps": info["fps"],
            "robot_type": robot,
            "note": "placeholder: LeRobot datasets name no environment to create",
        },
    }


def _filter_keys(names, info, extras, valid_ratio, seed) -> dict[str, list[str]]:
    if extras is not None:
        return keys_among(extras["filter_keys"], names)
    out: dict[str, list[str]] = {}
    for split, spec in (info.get("splits") or {}).items():
        if split == "train" or not isinstance(spec, str) or ":" not in spec:
            continue
        try:
            a, b = (int(x) for x in spec.split(":"))
        except ValueError:
            continue
        members = names[a:b]
        if members:
            out[str(split)] = members
    out.update(train_valid_keys(names, valid_ratio, seed))
    return out
