"""Minari's own layout (HDF5 storage): its files, names and dataset ids, for import and export.

A Minari dataset is a folder `<dataset id>/data/` holding `metadata.json` (spaces, env
spec, counts) and `main_data.hdf5`, whose groups `episode_<i>` hold `observations` (N + 1
steps: the first observation of the episode and the one after each action), `actions`,
`rewards`, `terminations`, `truncations` (N steps) and `infos`. Dict observation spaces
are groups, Tuple spaces groups of `_index_<i>`, and images (uint8 Box spaces of at least
32x32 bounded by 0 and 255) are stored as JPEG bytes.

This module holds the names and places of that layout, shared by `minari_import` and
`minari_export`; `demoset.convert.minari` is the front that offers both.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from demoset.errors import ConversionError

MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
EXTRAS = "robomimic"
"""Group inside each episode (and key in metadata.json) for what Minari has no field for."""
BOX_KEY = "flat"
NAMESPACE_METADATA_FILE = "namespace_metadata.json"
DEFAULT_MINARI_VERSION = "0.5.3"
DATASET_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")
EPISODE_RE = re.compile(r"^episode_(\d+)$")


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
            fmt = read_metadata(folder).get("data_format")
            raise ConversionError(f"Minari {fmt!r} storage is not supported; only hdf5 is", src)
    raise ConversionError(
        f"no Minari dataset here (looked for {MAIN_FILE} in {', '.join(candidates) or 'nothing'})",
        src,
    )


def read_metadata(folder: str) -> dict:
    """metadata.json of a Minari data folder ({} when there is none)."""
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


def space_of(meta: dict, key: str, path: str) -> dict | None:
    """The serialized space `key` (observation_space, action_space) of metadata, or None."""
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
