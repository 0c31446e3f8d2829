"""LeRobot's dataset layout (codebase versions v2.1 and v3.0): paths, fields, names.

A LeRobot dataset is a folder:

    meta/info.json       codebase_version, fps, features {name: dtype, shape, names[, info]},
                         data_path / video_path templates, totals, splits
    meta/stats.json      per feature: min, max, mean, std, count, q01 q10 q50 q90 q99
    v3.0: meta/tasks.parquet                     task text (pandas index) -> task_index
          meta/episodes/chunk-XXX/file-XXX.parquet  one row per episode: length, tasks,
                         dataset_from_index/to_index, data/chunk_index, data/file_index,
                         videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp}
          data/chunk-XXX/file-XXX.parquet        the frames of many episodes, one row each
          videos/<key>/chunk-XXX/file-XXX.mp4    many episodes one after another in time
    v2.1: meta/tasks.jsonl, meta/episodes.jsonl, meta/episodes_stats.jsonl
          data/chunk-XXX/episode_XXXXXX.parquet  one file per episode
          videos/chunk-XXX/<key>/episode_XXXXXX.mp4

Every frame row has timestamp (float32, frame_index / fps), frame_index, episode_index,
index (over the dataset) and task_index; other features are columns (shape (1,) as a
scalar, (d,) as a fixed-size list). Camera features have dtype "video" and live only in
the MP4 files.

Names between the two layouts: robomimic `obs/<key>` <-> `observation.<key>`, camera
`obs/<cam>_image` <-> `observation.images.<cam>`, `actions` <-> `action`,
`rewards` <-> `next.reward`, `dones` <-> `next.done`.
"""

from __future__ import annotations

V21, V30 = "v2.1", "v3.0"
VERSIONS = (V21, V30)
READABLE_VERSIONS = ("v2.0", V21, V30)

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PARQUET = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
TASKS_JSONL = "meta/tasks.jsonl"
EPISODES_JSONL = "meta/episodes.jsonl"
EPISODES_STATS_JSONL = "meta/episodes_stats.jsonl"
EXTRAS_PATH = "meta/demoset.hdf5"
"""demoset's own file beside LeRobot's metadata: what LeRobot has no field for."""

CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH_V30 = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH_V30 = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH_V30 = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH_V21 = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH_V21 = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200

ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"
STATE = "observation.state"
OBS_PREFIX = "observation."
IMAGE_PREFIX = "observation.images."
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
TIMESTAMP_TOLERANCE_S = 1e-4
"""LeRobot's own tolerance between a frame's timestamp and frame_index / fps."""


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk holds `chunks_size` files."""
    if file_index == chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def image_feature(obs_key: str) -> str:
    """`agentview_image` -> `observation.images.agentview`."""
    cam = (
        obs_key[: -len("_image")] if obs_key.endswith("_image") and obs_key != "_image" else obs_key
    )
    return IMAGE_PREFIX + cam


def lowdim_feature(obs_key: str) -> str:
    """`robot0_eef_pos` -> `observation.robot0_eef_pos`."""
    return OBS_PREFIX + obs_key


def obs_key_of(feature: str, is_image: bool) -> str:
    """The robomimic obs key for a LeRobot feature name (the inverse of the two above)."""
    if feature.startswith(IMAGE_PREFIX):
        cam = feature[len(IMAGE_PREFIX) :].replace("/", "_")
        return cam if cam.endswith("_image") else f"{cam}_image"
    name = feature[len(OBS_PREFIX) :] if feature.startswith(OBS_PREFIX) else feature
    name = name.replace("/", "_")
    if is_image and not name.endswith("_image"):
        name += "_image"
    return name
