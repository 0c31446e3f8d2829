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
    arrays = {}
    # the values LeRobot hands to a policy: its frames (hf_transform_to_torch), and the
    # stored values underneath (the loaded dataset without that transform)
    items = [ds.hf_dataset[i] for i in range(len(ds.hf_dataset))]
    raw = ds.hf_dataset.with_format(None)
    table = ds.hf_dataset.data  # the arrow table LeRobot loaded, in its stored dtypes
    for name, ft in meta.features.items():
        if ft["dtype"] in ("video", "image", "string"):
            continue
        arrays[f"torch/{name}"] = torch.stack([it[name] for it in items]).numpy()
        col = table.column(name).combine_chunks()
        if hasattr(col, "flatten") and col.type.num_fields == 1:
            arrays[f"col/{name}"] = col.flatten().to_numpy().reshape(len(col), -1)
        else:
            arrays[f"col/{name}"] = col.to_numpy(zero_copy_only=False)
    decoded = {}
    for key in meta.video_keys:
        frames = []
        for ep in range(meta.total_episodes):
            row = meta.episodes[ep]
            path = f"{root}/" + meta.get_video_file_path(ep, key).as_posix()
            if path not in decoded:
                with av.open(path) as c:
                    s = c.streams.video[0]
                    decoded[path] = {
                        round(float(f.pts * s.time_base), 4): f.to_ndarray(format="rgb24")
                        for f in c.decode(s)
                    }
            start = row[f"videos/{key}/from_timestamp"]
            ts = [
                float(t)
                for t in raw.select(range(row["dataset_from_index"], row["dataset_to_index"]))[
                    "timestamp"
                ]
            ]
            frames.append(np.stack([decoded[path][round(start + t, 4)] for t in ts]))
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
    np.savez_compressed(
        out, lengths=np.array([6, 9, 5]), **{k: np.stack(v) for k, v in given.items()}
    )


def upgrade(root: str) -> None:
    import os

    from lerobot.datasets.v30.convert_dataset_v21_to_v30 import convert_dataset

    parent, name = os.path.split(os.path.abspath(root))
    convert_dataset(repo_id=name, root=parent, push_to_hub=False)


if __name__ == "__main__":
    args = sys.argv[1:]
    while args:
        command = args.pop(0)
        if command == "upgrade":
            upgrade(args.pop(0))
        else:
            {"read": read, "write": write}[command](args.pop(0), args.pop(0))
