"""summarize(path): the numbers people look at first (what `demoset info` prints).

It reads only attributes, shapes and the actions arrays (small), so it answers in well
under a second on a 200-demo file and never reads image frames.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from demoset.format import DemoFile, open_dataset
from demoset.format import constants as C


def _structure(df: DemoFile, demo: str) -> dict[str, Any]:
    arrays = {}
    for key in df.array_keys(demo):
        dset = df.dataset(demo, key)
        arrays[key] = {"shape": list(dset.shape), "dtype": str(dset.dtype)}
    attrs = {}
    for key, value in df.demo_attrs(demo).items():
        if isinstance(value, str):
            attrs[key] = f"<text, {len(value)} chars>" if len(value) > 80 else value
        elif isinstance(value, np.ndarray):
            attrs[key] = (
                value.tolist() if value.size <= 16 else f"<array {value.shape} {value.dtype}>"
            )
        elif isinstance(value, np.generic):
            attrs[key] = value.item()
        else:
            attrs[key] = value
    return {"arrays": arrays, "attrs": attrs}


def _image_storage(df: DemoFile, demos: list[str]) -> dict[str, Any]:
    """Per image-shaped key: filters, frames per chunk (of the first demo) and the ratio of
    raw to stored bytes over `demos` (HDF5 metadata only; no frame is read)."""
    from demoset.format import storage_of

    out: dict[str, Any] = {}
    if not demos:
        return out
    keys = [
        k
        for k, info in df.array_keys(demos[0]).items()
        if C.is_image_shape(tuple(info.shape), info.dtype)
    ]
    for key in keys:
        raw = stored = 0
        first = None
        for demo in demos:
            if not df.has(demo, key):
                continue
            info = storage_of(df.dataset(demo, key))
            first = first or info
            raw += info["raw_bytes"]
            stored += info["stored_bytes"]
        if first is not None:
            out[key] = {
                "filters": first["filters"],
                "chunk_frames": first["chunk_frames"],
                "raw_bytes": raw,
                "stored_bytes": stored,
                "ratio": raw / stored if stored else None,
            }
    return out


def summarize(
    path: str | os.PathLike, filter_key: str | None = None, verbose: bool = False
) -> dict[str, Any]:
    """Summary of a dataset (or of one filter key's demos) as a JSON-ready dict.

    Keys: path, file_size, filter_key, num_demos, num_transitions, length (mean, std, min,
    max), action_dim, action_min / action_max per dimension, actions_in_range, total_attr,
    env_meta, env_meta_error, filter_keys {name: count}, first_demo, structure (of the
    first demo), image_storage {key: filters, chunk_frames, raw/stored bytes, ratio}; with verbose also filter_key_demos and demo_structures for every demo.
    """
    path = os.fspath(path)
    with open_dataset(path) as df:
        demos = df.demos_for(filter_key)
        lengths = df.lengths(demos) if demos else np.zeros(0, dtype=np.int64)
        act_min = act_max = None
        action_dim = None
        for demo in demos:
            if not df.has(demo, C.ACTIONS):
                continue
            actions = df.read(demo, C.ACTIONS)
            if actions.dtype.kind not in "biuf":
                continue  # not numbers (validate reports it)
            actions = np.asarray(actions, dtype=np.float64)
            if actions.ndim == 1:
                actions = actions[:, None]
            if actions.ndim != 2 or actions.shape[0] == 0:
                continue
            if action_dim is None:
                action_dim = actions.shape[1]
                act_min = np.full(action_dim, np.inf)
                act_max = np.full(action_dim, -np.inf)
            if actions.shape[1] != action_dim:
                continue
            act_min = np.fmin(act_min, np.nanmin(actions, axis=0))
            act_max = np.fmax(act_max, np.nanmax(actions, axis=0))
        env_meta = env_error = None
        try:
            meta = df.env_meta
            env_meta = meta.to_dict() if meta is not None else None
        except Exception as exc:  # noqa: BLE001 - reported, never fatal for info
            env_error = getattr(exc, "message", str(exc))
        filter_keys = {}
        for key in df.filter_keys:
            try:
                filter_keys[key] = len(df.filter_key_demos(key))
            except Exception:  # noqa: BLE001
                filter_keys[key] = None
        summary: dict[str, Any] = {
            "path": path,
            "file_size": os.path.getsize(path),
            "filter_key": filter_key,
            "num_demos": len(demos),
            "num_transitions": int(lengths.sum()),
            "length": {
                "mean": float(lengths.mean()) if len(lengths) else 0.0,
                "std": float(lengths.std()) if len(lengths) else 0.0,
                "min": int(lengths.min()) if len(lengths) else 0,
                "max": int(lengths.max()) if len(lengths) else 0,
            },
            "action_dim": action_dim,
            "action_min": act_min.tolist() if act_min is not None else None,
            "action_max": act_max.tolist() if act_max is not None else None,
            "actions_in_range": bool(
                act_min is None or (act_min.min() >= -1.0 and act_max.max() <= 1.0)
            ),
            "total_attr": df.total,
            "env_meta": env_meta,
            "env_meta_error": env_error,
            "is_raw_robosuite": df.is_raw_robosuite,
            "filter_keys": filter_keys,
            "first_demo": demos[0] if demos else None,
            "structure": _structure(df, demos[0]) if demos else None,
            "image_storage": _image_storage(df, demos),
        }
        if verbose:
            summary["filter_key_demos"] = {k: df.filter_key_demos(k) for k in df.filter_keys}
            summary["demo_lengths"] = dict(zip(demos, lengths.tolist()))
            summary["demo_structures"] = {d: _structure(df, d) for d in demos}
    return summary
