"""Names and numbers of the robomimic HDF5 layout (see docs/layout.md)."""

from __future__ import annotations

import re

DATA_GROUP = "data"
MASK_GROUP = "mask"
STAGING_GROUP = "demoset_staging"
"""Top-level group where a demo is written before it is moved under `data/`.

robomimic only looks inside `data` and `mask`, so a demo cut short by a crash stays out of
everyone's way here until `demoset repair` drops it.
"""

OBS = "obs"
NEXT_OBS = "next_obs"
ACTION_DICT = "action_dict"
ACTIONS = "actions"
REWARDS = "rewards"
DONES = "dones"
STATES = "states"

ATTR_TOTAL = "total"
ATTR_ENV_ARGS = "env_args"
ATTR_NUM_SAMPLES = "num_samples"
ATTR_MODEL_FILE = "model_file"
ATTR_EP_META = "ep_meta"

ENV_TYPE_ROBOSUITE = 1
ENV_TYPE_GYM = 2
ENV_TYPE_IG_MOMART = 3
ENV_TYPE_NAMES = {
    ENV_TYPE_ROBOSUITE: "robosuite",
    ENV_TYPE_GYM: "gym",
    ENV_TYPE_IG_MOMART: "ig_momart",
}

_DEMO_NUMBER = re.compile(r"(\d+)$")


def demo_sort_key(name: str) -> tuple:
    """Sort key that puts `demo_2` before `demo_10` (numeric, then by name)."""
    match = _DEMO_NUMBER.search(name)
    if match:
        return (0, name[: match.start()], int(match.group(1)))
    return (1, name, 0)


def sorted_demos(names) -> list[str]:
    """Demo names in numeric order."""
    return sorted(
        (n.decode() if isinstance(n, bytes) else str(n) for n in names), key=demo_sort_key
    )


def demo_name(index: int) -> str:
    return f"demo_{index}"


def is_image_shape(shape: tuple, dtype) -> bool:
    """True for per-step shapes that look like camera frames: (H, W, C) with C in 1..4."""
    return len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] > 1 and shape[1] > 1
