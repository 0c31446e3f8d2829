"""Helpers shared by the tests: datasets written by demoset's own writer, robomimic imports.

Nothing here downloads anything: every dataset a test uses is made by the test.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

from demoset.format import DatasetWriter  # noqa: E402

LIFT_ENV = {
    "env_name": "Lift",
    "type": 1,
    "env_kwargs": {"robots": ["Panda"], "has_renderer": False},
}


def write_dataset(
    path,
    n_demos: int = 6,
    min_len: int = 8,
    max_len: int = 20,
    action_dim: int = 7,
    low_dim: dict | None = None,
    cameras: tuple[str, ...] = (),
    image_size: int = 16,
    seed: int = 0,
    next_obs: bool = True,
    action_dict: bool = False,
    env_meta: dict | None = None,
    image_compression: str | None = None,
    filter_keys: dict | None = None,
    stats: bool = True,
) -> str:
    """Write a small synthetic robomimic-layout dataset and return its path.

    Values are random but reproducible from `seed`; lengths vary between demos so window
    arithmetic at demo edges is exercised.
    """
    rng = np.random.default_rng(seed)
    low_dim = {"robot0_eef_pos": 3, "object": 10} if low_dim is None else low_dim
    with DatasetWriter(
        path,
        env_meta=env_meta or LIFT_ENV,
        image_compression=image_compression,
        overwrite=True,
        stats=stats,
    ) as w:
        for _ in range(n_demos):
            n = int(rng.integers(min_len, max_len + 1))
            obs = {k: rng.standard_normal((n, d)).astype(np.float32) for k, d in low_dim.items()}
            for cam in cameras:
                obs[f"{cam}_image"] = rng.integers(
                    0, 256, (n, image_size, image_size, 3), dtype=np.uint8
                )
            ad = None
            if action_dict:
                ad = {
                    "abs_pos": rng.uniform(-1, 1, (n, 3)),
                    "rel_rot_6d": rng.uniform(-1, 1, (n, 6)),
                    "gripper": rng.uniform(-1, 1, (n, 1)),
                }
            w.add_demo(
                actions=rng.uniform(-1, 1, (n, action_dim)),
                obs=obs,
                rewards=(np.arange(n) == n - 1).astype(np.float64),
                states=rng.standard_normal((n, 12)),
                derive_next_obs=next_obs,
                action_dict=ad,
                model_file="<mujoco model='test'/>",
            )
        for name, demos in (filter_keys or {}).items():
            w.set_filter_key(name, demos)
    return str(path)


def stub_torchvision() -> None:
    """Put a stub `torchvision` in sys.modules before importing robomimic's scripts.

    robomimic's scripts import torchvision through robomimic.algo, and PyPI's torchvision
    does not import beside the CPU torch wheel these machines use. The dataset and file
    code compared against never calls it, so an empty module is enough.
    """
    if "torchvision" in sys.modules:
        return

    def unavailable(*args, **kwargs):
        raise RuntimeError("torchvision is stubbed in demoset's tests")

    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Lambda = tv.transforms.Compose = unavailable
    tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    tv.models = types.ModuleType("torchvision.models")
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tv.transforms
    sys.modules["torchvision.transforms.functional"] = tv.transforms.functional
    sys.modules["torchvision.models"] = tv.models
