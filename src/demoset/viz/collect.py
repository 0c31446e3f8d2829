"""Reading what plots and the report show: which keys, which demos, and their arrays.

Only small arrays (actions, low-dim observations) are read whole; camera frames are read
by `demoset.viz.sampling.read_rows` a few at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np

from demoset.errors import LayoutError
from demoset.format import DemoFile

Progress = Callable[[int, int], None]

SPLIT_WORDS = ("train", "valid", "val", "test")


def _is_depth(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return len(shape) == 3 and shape[-1] == 1 and np.dtype(dtype).kind == "f"


def camera_keys(df: DemoFile, demo: str | None = None) -> list[str]:
    """Observation keys holding frames ("obs/agentview_image", depth maps too)."""
    out = []
    for key, info in df.obs_keys(demo).items():
        if info.is_image or _is_depth(info.shape, info.dtype):
            out.append(f"obs/{key}")
    return out


def low_dim_keys(df: DemoFile, demo: str | None = None) -> list[str]:
    """Observation keys holding a vector (or scalar) per step: "obs/robot0_eef_pos", ..."""
    out = []
    for key, info in df.obs_keys(demo).items():
        if len(info.shape) <= 1 and np.dtype(info.dtype).kind in "fiub":
            out.append(f"obs/{key}")
    return out


def resolve_keys(df: DemoFile, keys: Sequence[str], demo: str | None = None) -> list[str]:
    """Array paths for user-given keys: "actions", "obs/x", or a bare obs name "x".

    Raises LayoutError naming the first key the demo does not have.
    """
    demo = demo or df.first_demo()
    arrays = df.array_keys(demo)
    out = []
    for key in keys:
        key = key.strip("/")
        for candidate in (key, f"obs/{key}"):
            if candidate in arrays:
                if candidate not in out:
                    out.append(candidate)
                break
        else:
            known = ", ".join(k for k in arrays if not k.startswith("next_obs/"))
            raise LayoutError(f"no array {key!r} (arrays: {known})", df.path, f"/data/{demo}/{key}")
    return out


def read_flat(df: DemoFile, demo: str, key: str) -> np.ndarray:
    """A per-step array as float64 (N, D): trailing axes flattened, a 1-D array as one column."""
    arr = np.asarray(df.read(demo, key))
    if arr.ndim == 0:
        arr = arr.reshape(1)
    return arr.reshape(len(arr), -1).astype(np.float64)


def read_actions(
    df: DemoFile, demos: Sequence[str], progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Actions of each demo as float64 (N, A); demos without actions are left out."""
    out = {}
    for i, demo in enumerate(demos):
        if df.has(demo, "actions"):
            out[demo] = read_flat(df, demo, "actions")
        if progress:
            progress(i + 1, len(demos))
    return out


def filter_key_members(df: DemoFile, demos: Sequence[str]) -> dict[str, list[str]]:
    """Each filter key of the file with the demos of `demos` it names (file order kept)."""
    chosen = set(demos)
    out = {}
    for key in df.filter_keys:
        try:
            named = df.filter_key_demos(key)
        except LayoutError:
            continue
        named_set = set(named)
        out[key] = [d for d in demos if d in named_set and d in chosen]
    return out


def find_partition(demos: Sequence[str], members: dict[str, list[str]]) -> list[str]:
    """Filter keys that split `demos` exactly (disjoint and covering), e.g. train / valid.

    Used to colour lengths and actions by split. Pairs and triples are tried among the first
    twelve keys; a split whose names contain train / valid / test wins over any other, then
    the split with fewer keys. Returns [] when no filter keys split the demos.
    """
    wanted = set(demos)
    if not wanted:
        return []
    keys = [k for k, v in members.items() if v][:12]
    best: tuple | None = None
    for size in (2, 3):
        for combo in combinations(keys, size):
            sets = [set(members[k]) for k in combo]
            if sum(len(s) for s in sets) != len(wanted) or set().union(*sets) != wanted:
                continue
            named = sum(any(w in k.lower() for w in SPLIT_WORDS) for k in combo)
            rank = (-named, size)
            if best is None or rank < best[0]:
                best = (rank, list(combo))
    return best[1] if best else []


def demo_groups(
    demos: Sequence[str], members: dict[str, list[str]], partition: Sequence[str]
) -> list[str]:
    """For each demo, the name of the partition key holding it ("all" without a partition)."""
    if not partition:
        return ["all"] * len(demos)
    owner = {d: key for key in partition for d in members[key]}
    return [owner.get(d, "other") for d in demos]
