"""RoboTurk Pilot task folders into the robomimic layout.

A RoboTurk Pilot task folder (e.g. `RoboTurkPilot/bins-Can`) holds `demo.hdf5` and a
`models/` folder of MuJoCo XML files. Each demo in `demo.hdf5` has `states`,
`joint_velocities` and `gripper_actuations`, and an attribute `model_file` naming its XML
file under `models/`; `data` has an attribute `env` (e.g. "SawyerPickPlaceCan").

The converted file is a new file (the task folder is never modified):
- `actions` = joint velocities followed by the gripper actuation, clipped to [-1, 1]; the
  number of values the clip changed is returned, since a policy trained on clipped
  actions cannot reproduce the clipped part.
- `states` copied; the demo's model XML stored in its `model_file` attribute; demo names
  kept as in the source.
- env_args for robosuite (type 1): the source's env name plus "Teleop", with the robosuite
  0.3 keyword arguments robomimic uses for these files.
- filter keys: `train` / `valid` (90/10), `fastest_<n>` (the n shortest demos), and
  `fastest_<n>_train` / `fastest_<n>_valid`. Splits pick the same demos robomimic's
  `split_train_val.py` picks with `np.random.seed(seed)`.

There are no observations: RoboTurk Pilot was recorded with robosuite 0.3, whose models
current robosuite cannot load, so observations cannot be re-rendered from the states.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np

from demoset.errors import ConversionError, DemosetError
from demoset.format import (
    ENV_TYPE_ROBOSUITE,
    READ_ERRORS,
    DatasetWriter,
    check_link_safe,
    open_h5,
    read_array,
    sorted_demos,
    untrusted_input,
)
from demoset.masks import split_demos

ROBOSUITE_V03_KWARGS = {
    "has_renderer": False,
    "has_offscreen_renderer": False,
    "ignore_done": True,
    "use_object_obs": True,
    "use_camera_obs": False,
    "camera_depth": False,
    "camera_height": 84,
    "camera_width": 84,
    "camera_name": "agentview",
    "gripper_visualization": False,
    "reward_shaping": False,
    "control_freq": 100,
}
"""robosuite 0.3 environment arguments for RoboTurk Pilot data, as robomimic sets them."""


@dataclass
class RoboTurkResult:
    """What `convert_roboturk_pilot` wrote."""

    out: str
    demos: int
    transitions: int
    clipped_values: int
    """Action values outside [-1, 1] that were clipped."""
    action_values: int
    env_name: str
    filter_keys: dict[str, int] = field(default_factory=dict)
    """Filter key name -> number of demos."""


def fastest_demos(demos: Sequence[str], lengths: Sequence[int], n: int) -> list[str]:
    """The `n` shortest demos, chosen as robomimic's RoboTurk script chooses them."""
    order = sorted(range(len(demos)), key=lambda i: demos[i])
    ordered = [demos[i] for i in order]
    ordered_lengths = np.asarray([lengths[i] for i in order])
    return [ordered[i] for i in np.argsort(ordered_lengths)[:n]]


def _read(h5: h5py.File, demo: str, key: str, path: str) -> np.ndarray:
    grp = h5["data"][demo]
    if key not in grp:
        raise ConversionError(f"no '{key}' array in this demo", path, f"/data/{demo}/{key}")
    check_link_safe(grp, key, path)
    dset = grp[key]
    if not isinstance(dset, h5py.Dataset) or dset.dtype.kind not in "biuf" or dset.ndim == 0:
        raise ConversionError("is not a numeric array", path, f"/data/{demo}/{key}")
    return read_array(dset, path, error=ConversionError)  # size-checked, one-line errors


def _model_xml(folder: str, name, hdf5_path: str, demo: str) -> str:
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    models = os.path.realpath(os.path.join(folder, "models"))
    target = os.path.realpath(os.path.join(models, str(name)))
    if not target.startswith(models + os.sep):
        raise ConversionError(
            f"model_file {name!r} points outside the models folder; refused",
            hdf5_path,
            f"/data/{demo}.attrs[model_file]",
        )
    try:
        with open(target, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ConversionError(
            f"cannot read model file {target} ({exc.strerror or exc})",
            hdf5_path,
            f"/data/{demo}.attrs[model_file]",
        ) from None


@untrusted_input(error=ConversionError)  # h5py errors on a damaged source
def convert_roboturk_pilot(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    fastest_n: int = 225,
    val_ratio: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RoboTurkResult:
    """Convert the RoboTurk Pilot task folder `folder` into the new file `out`."""
    folder, out = os.fspath(folder), os.fspath(out)
    if fastest_n < 1:
        raise ConversionError(f"fastest_n must be at least 1, got {fastest_n}", folder)
    if not 0.0 <= val_ratio < 1.0:
        raise ConversionError(f"the validation ratio must be in [0, 1), got {val_ratio}", folder)
    hdf5_path = os.path.join(folder, "demo.hdf5")
    if not os.path.isdir(folder):
        raise ConversionError(
            "not a folder (give a RoboTurk Pilot task folder holding demo.hdf5)", folder
        )
    if os.path.realpath(out) == os.path.realpath(hdf5_path):
        raise ConversionError("the output would overwrite the source; choose another --out", out)
    with open_h5(hdf5_path, "r") as h5:
        if "data" not in h5 or not isinstance(h5["data"], h5py.Group):
            raise ConversionError(
                "no 'data' group: not a RoboTurk Pilot demo file", hdf5_path, "/data"
            )
        data = h5["data"]
        env = data.attrs.get("env")
        if isinstance(env, bytes):
            env = env.decode("utf-8", errors="replace")
        if not isinstance(env, str) or not env:
            raise ConversionError(
                "no 'env' attribute naming the environment", hdf5_path, "/data.attrs[env]"
            )
        demos = sorted_demos(k for k in data.keys() if isinstance(data.get(k), h5py.Group))
        if not demos:
            raise ConversionError("the file has no demos", hdf5_path, "/data")
        env_meta = {
            "env_name": env + "Teleop",
            "type": ENV_TYPE_ROBOSUITE,
            "env_kwargs": dict(ROBOSUITE_V03_KWARGS),
        }
        clipped = 0
        values = 0
        lengths: list[int] = []
        try:
            with DatasetWriter(
                out,
                env_meta=env_meta,
                atomic=True,
                overwrite=overwrite,
                data_attrs={"source_format": "roboturk_pilot"},
            ) as writer:
                for k, demo in enumerate(demos):
                    check_link_safe(data, demo, hdf5_path)
                    grp = data[demo]
                    if "model_file" not in grp.attrs:
                        raise ConversionError("no model_file attribute", hdf5_path, f"/data/{demo}")
                    xml = _model_xml(folder, grp.attrs["model_file"], hdf5_path, demo)
                    states = _read(h5, demo, "states", hdf5_path)
                    jvels = _read(h5, demo, "joint_velocities", hdf5_path)
                    gripper = _read(h5, demo, "gripper_actuations", hdf5_path)
                    if gripper.ndim == 1:
                        gripper = gripper[:, None]
                    if jvels.ndim != 2 or gripper.ndim != 2 or jvels.shape[0] != gripper.shape[0]:
                        raise ConversionError(
                            f"joint_velocities {jvels.shape} and gripper_actuations {gripper.shape} do not line up",
                            hdf5_path,
                            f"/data/{demo}",
                        )
                    if states.shape[0] != jvels.shape[0]:
                        raise ConversionError(
                            f"states has {states.shape[0]} steps, joint_velocities {jvels.shape[0]}",
                            hdf5_path,
                            f"/data/{demo}/states",
                        )
                    raw = np.concatenate([jvels, gripper], axis=1)
                    actions = np.clip(raw, -1.0, 1.0)
                    clipped += int(np.count_nonzero(actions != raw))
                    values += int(raw.size)
                    writer.add_demo(actions=actions, states=states, model_file=xml, name=demo)
                    lengths.append(int(actions.shape[0]))
                    if progress is not None:
                        progress(k + 1, len(demos))

                splits: dict[str, list[str]] = {}
                splits["train"], splits["valid"] = split_demos(demos, val_ratio, seed)
                fastest_key = f"fastest_{fastest_n}"
                fastest = fastest_demos(demos, lengths, fastest_n)
                splits[fastest_key] = fastest
                train, valid = split_demos(fastest, val_ratio, seed)
                splits[f"{fastest_key}_train"], splits[f"{fastest_key}_valid"] = train, valid
                for name, members in splits.items():
                    writer.set_filter_key(name, members)
        except DemosetError:
            raise
        except READ_ERRORS as exc:  # whatever h5py raises on a damaged source
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"cannot read the source ({first})", hdf5_path) from None

    return RoboTurkResult(
        out=out,
        demos=len(demos),
        transitions=int(sum(lengths)),
        clipped_values=clipped,
        action_values=values,
        env_name=env_meta["env_name"],
        filter_keys={name: len(members) for name, members in splits.items()},
    )
