"""Run inside the lerobot venv (scripts/lerobot_env.sh), never by pytest directly.

python lerobot_probe.py read ROOT OUT.npz   LeRobotDataset(root=ROOT): its low-dim
    columns per frame, its metadata, and each camera's frames picked at
    from_timestamp + timestamp from the MP4 (decoded with PyAV, since lerobot's own
    decoders need torchvision/torchcodec, which do not import beside this torch)
python lerobot_probe.py write ROOT OUT.npz  LeRobotDataset.create + add_frame +
    save_episode + finalize: a small dataset made by LeRobot's own writer, and the
    values that were given to it
"""

from __future__ import annotations

import json
import sys

import numpy as np


def read(root: str, out: str) -> None:
    import av
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("demoset/probe", root=root)
    meta = ds.meta
    hf = ds.hf_dataset
    arrays = {}
    for name, ft in meta.features.items():
        if ft["dtype"] in ("video", "image", "string"):
            continue
        col = hf[name]
        arrays[f"col/{name}"] = (
            torch.stack(list(col)).numpy() if isinstance(col[0], torch.Tensor) else np.asarray(col)
        )
    for key in meta.video_keys:
        frames = []
        for ep in range(meta.total_episodes):
            row = meta.episodes[ep]
            path = f"{root}/" + meta.get_video_file_path(ep, key).as_posix()
            start = row[f"videos/{key}/from_timestamp"]
            n = row["length"]
            wanted = [start + t / meta.fps for t in range(n)]
            got = {}
            with av.open(path) as c:
                s = c.streams.video[0]
                for f in c.decode(s):
                    got[round(float(f.pts * s.time_base), 4)] = f.to_ndarray(format="rgb24")
            frames.append(np.stack([got[round(w, 4)] for w in wanted]))
        arrays[f"video/{key}"] = np.concatenate(frames)
    info = {
        "codebase_version": meta.info["codebase_version"],
        "fps": meta.fps,
        "total_episodes": meta.total_episodes,
        "total_frames": meta.total_frames,
        "tasks": list(meta.tasks.index),
        "video_keys": list(meta.video_keys),
        "len": len(ds),
        "stats_keys": sorted(meta.stats) if meta.stats else [],
    }
    np.savez(out, info=np.frombuffer(json.dumps(info).encode(), dtype=np.uint8), **arrays)


def write(root: str, out: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.state": {"dtype": "float32", "shape": (4,), "names": None},
        "observation.images.front": {
            "dtype": "video",
            "shape": (32, 48, 3),
            "names": ["height", "width", "channels"],
        },
        "action": {"dtype": "float32", "shape": (2,), "names": None},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }
    ds = LeRobotDataset.create("demoset/made-by-lerobot", fps=10, root=root, features=features)
    rng = np.random.default_rng(0)
    given: dict[str, list] = {k: [] for k in features}
    yy, xx = np.mgrid[0:32, 0:48]
    for ep, n in enumerate([6, 9, 5]):
        for t in range(n):
            img = np.stack(
                [(xx * 5 + t * 7) % 256, (yy * 7 + ep * 40) % 256, ((xx + yy) * 3) % 256], -1
            ).astype(np.uint8)
            frame = {
                "observation.state": rng.standard_normal(4).astype(np.float32),
                "observation.images.front": img,
                "action": rng.uniform(-1, 1, 2).astype(np.float32),
                "next.reward": np.array([float(t == n - 1)], dtype=np.float32),
                "next.done": np.array([t == n - 1]),
                "task": f"stack the blocks {ep % 2}",
            }
            for k in features:
                given[k].append(frame[k])
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    np.savez(out, lengths=np.array([6, 9, 5]), **{k: np.stack(v) for k, v in given.items()})


if __name__ == "__main__":
    {"read": read, "write": write}[sys.argv[1]](sys.argv[2], sys.argv[3])
