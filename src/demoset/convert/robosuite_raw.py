"""Raw robosuite demonstration files into the robomimic layout (a new file).

A raw file is what robosuite's collection tools write (`data/demo_N` with `states`,
`actions` and attribute `model_file`; `data` attributes `env`, `env_info`,
`repository_version`). robosuite 1.0-1.3's layout is read too (robosuite_layout.py): the
folder or its demo.hdf5, model XMLs in models/ beside it, demo groups named `demo1`. robomimic's conversion edits that file in place; this one reads
it and writes a new file, leaving the raw file untouched:

- `data/env_args`: {"env_name": env, "type": 1, "env_version": repository_version,
  "env_kwargs": env_info}, as robomimic builds it;
- `num_samples` per demo, `total`, the model XML (and ep_meta when present);
- filter keys `train` / `valid` with robomimic's split rule (`val_ratio`, seeded);
- optionally `action_dict/`: relative pose actions split as robomimic's
  extract_action_dict does (rel_pos, rel_rot_axis_angle, rel_rot_6d, gripper) and the
  absolute pose targets the delta actions meant (abs_pos, abs_rot_axis_angle,
  abs_rot_6d), computed by replaying the demo's states through the arm controller.

The new file has no observations yet (rewards are zeros and dones mark the last step);
`demoset extract-obs` renders them from the states.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demoset.convert.robosuite_layout import model_xml, raw_file, robomimic_demo_name
from demoset.errors import ConversionError, DemosetError
from demoset.format import (
    DatasetWriter,
    EnvMeta,
    env_meta_from_raw_attrs,
    open_dataset,
    untrusted_input,
)
from demoset.format import constants as C

ProgressFn = Callable[[int, int], None]


@dataclass
class ConvertReport:
    output: str
    demos: int
    total: int
    filter_keys: dict[str, list[str]] = field(default_factory=dict)
    action_dict_keys: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- pose actions
def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(N, 3) axis-angle vectors to (N, 3, 3) rotation matrices (Rodrigues' formula)."""
    axis_angle = np.asarray(axis_angle, dtype=np.float64).reshape(-1, 3)
    theta = np.linalg.norm(axis_angle, axis=1)
    axis = np.divide(
        axis_angle, theta[:, None], out=np.zeros_like(axis_angle), where=theta[:, None] > 0
    )
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    c, s = np.cos(theta), np.sin(theta)
    k = 1.0 - c
    return np.stack(
        [
            np.stack([c + x * x * k, x * y * k - z * s, x * z * k + y * s], axis=1),
            np.stack([y * x * k + z * s, c + y * y * k, y * z * k - x * s], axis=1),
            np.stack([z * x * k - y * s, z * y * k + x * s, c + z * z * k], axis=1),
        ],
        axis=1,
    )


def axis_angle_to_rot_6d(axis_angle: np.ndarray) -> np.ndarray:
    """The 6-D rotation representation robomimic uses: the first two rows of the matrix."""
    return axis_angle_to_matrix(axis_angle)[:, :2, :].reshape(-1, 6)


def pose_action_dict(actions: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """Split 7-D (or 8-D with base mode) pose actions into robomimic's action_dict keys."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] not in (7, 8):
        raise ConversionError(
            f"pose action_dict needs 7-D actions (pos, axis-angle, gripper), got {actions.shape}"
        )
    out = {
        f"{prefix}pos": actions[:, :3].astype(np.float32),
        f"{prefix}rot_axis_angle": actions[:, 3:6].astype(np.float32),
        f"{prefix}rot_6d": axis_angle_to_rot_6d(actions[:, 3:6]).astype(np.float32),
        "gripper": actions[:, 6:7].astype(np.float32),
    }
    if actions.shape[1] == 8:
        out["base_mode"] = actions[:, 7:8].astype(np.float32)
    return out


# ---------------------------------------------------------------------------- conversion
def _check_raw(df) -> list[str]:
    demos = df.demos
    if not demos:
        raise ConversionError("the raw file has no demos", df.path, "/data")
    for demo in demos:
        for key in (C.STATES, C.ACTIONS):
            if not df.has(demo, key):
                raise ConversionError(f"demo has no {key}", df.path, f"/data/{demo}/{key}")
        states, actions = df.dataset(demo, C.STATES), df.dataset(demo, C.ACTIONS)
        if states.ndim != 2 or actions.ndim != 2 or states.shape[0] != actions.shape[0]:
            raise ConversionError(
                f"states {states.shape} and actions {actions.shape} differ in length",
                df.path,
                f"/data/{demo}",
            )
        model_file = df.demo_attrs(demo).get(C.ATTR_MODEL_FILE)
        if not isinstance(model_file, str) or not model_file:
            raise ConversionError(
                "demo has no model_file attribute", df.path, f"/data/{demo}.attrs[model_file]"
            )
    return demos


@untrusted_input(error=ConversionError)  # h5py errors on a damaged source
def convert_robosuite_raw(
    raw_path: str | os.PathLike,
    output: str | os.PathLike,
    val_ratio: float = 0.1,
    seed: int = 0,
    split: bool = True,
    action_dict: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    make_env: Callable[[EnvMeta], Any] | None = None,
) -> ConvertReport:
    """Write the robomimic-layout version of a raw robosuite file to `output` (atomically).

    Demo names are kept (robosuite numbers them from demo_1). With `split`, filter keys
    `train`/`valid` hold a seeded `val_ratio` split. With `action_dict`, relative and
    absolute pose actions are added; the absolute ones need the simulator, given as
    `make_env` (`demoset.sim.make_env`: the sim box sits right of convert, so it is passed
    in rather than imported).
    """
    raw_path, output = raw_file(raw_path), os.fspath(output)
    if os.path.abspath(raw_path) == os.path.abspath(output):
        raise ConversionError(
            "the output must be a new file; the raw file is never modified", output
        )
    with open_dataset(raw_path) as df:
        env_meta = env_meta_from_raw_attrs(df.data_attrs(), raw_path)
        demos = _check_raw(df)
        env = None
        if action_dict:
            if make_env is None:
                raise ConversionError(
                    "absolute actions need the simulator: pass make_env (demoset.sim.make_env)",
                    raw_path,
                )
            try:
                env = make_env(env_meta)
            except DemosetError as exc:
                raise ConversionError(
                    f"absolute actions need the simulator: {exc.message}", raw_path
                ) from None
        report = ConvertReport(output, 0, 0)
        try:
            with DatasetWriter(
                output, env_meta=env_meta, mode="w", overwrite=overwrite, atomic=True
            ) as writer:
                names = {demo: robomimic_demo_name(demo) for demo in demos}
                for i, demo in enumerate(demos):
                    states = df.read(demo, C.STATES)
                    actions = df.read(demo, C.ACTIONS)
                    attrs = df.demo_attrs(demo)
                    xml = model_xml(
                        attrs[C.ATTR_MODEL_FILE], raw_path, f"/data/{demo}.attrs[model_file]"
                    )
                    ad = None
                    if env is not None:
                        ad = pose_action_dict(actions, "rel_")
                        try:
                            env.reset_to({"model": xml, "ep_meta": attrs.get(C.ATTR_EP_META)})
                            absolute = env.absolute_pose_actions(states, actions)
                        except DemosetError as exc:
                            raise ConversionError(exc.message, raw_path, f"/data/{demo}") from None
                        ad.update(pose_action_dict(absolute, "abs_"))
                        report.action_dict_keys = sorted(ad)
                    writer.add_demo(
                        actions=actions,
                        states=states,
                        model_file=xml,
                        ep_meta=attrs.get(C.ATTR_EP_META) or None,
                        action_dict=ad,
                        name=names[demo],
                    )
                    report.demos += 1
                    report.total += len(actions)
                    if progress is not None:
                        progress(i + 1, len(demos))
                if split:
                    from demoset.masks import split_demos

                    train, valid = split_demos([names[d] for d in demos], val_ratio, seed)
                    writer.set_filter_key("train", train)
                    writer.set_filter_key("valid", valid)
                    report.filter_keys = {"train": train, "valid": valid}
        finally:
            if env is not None:
                env.close()
    return report
