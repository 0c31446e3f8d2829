"""D4RL HDF5 files into the robomimic layout, vectorised and without touching the source.

A D4RL file is one long stream of transitions: `observations` (N, D), `actions` (N, A),
`rewards` (N,), `terminals` (N,), usually `timeouts` (N,), and optionally
`next_observations` (N, D), `infos/*` (N, ...) and `metadata/*`.

How the stream becomes demos:
- An episode ends at a step whose `terminals` or `timeouts` flag is set.
- Steps after the last flagged step form an unterminated episode. It is kept as the last
  demo (robomimic's script drops it); `keep_trailing=False` drops it instead.
- `obs/flat` holds the observations. `infos/<key>` arrays become `obs/<key>` when asked.
- `next_obs/flat` is `next_observations` when the file has it. Otherwise it is derived:
  `next_obs[t] = obs[t + 1]` inside an episode, and the last step of each episode repeats
  its own observation (robomimic's rule: the true final observation is not in the file).
  Info keys turned into observations always use the derived rule.
- `dones` are the `terminals` flags, so a time limit is not mistaken for a terminal state.
  `dones_at_timeouts=True` also sets `dones` on the last step of every completed episode,
  as robomimic's converter does.
- env_args: gym type (2) with the env id from the argument, else from the file's metadata
  (`env_name`, `env_id` or `env`), else the file name without its extension.

Episodes are cut with numpy on blocks of whole episodes; no Python loop runs per
transition, and memory stays near `block_bytes`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np

from demoset.errors import ConversionError, DemosetError
from demoset.format import (
    ENV_TYPE_GYM,
    DatasetWriter,
    check_dataset_safe,
    check_link_safe,
    open_h5,
    untrusted_input,
)
from demoset.fsutil import same_file

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
ENV_NAME_KEYS = ("env_name", "env_id", "env")
OBS_KEY = "flat"


@dataclass
class D4RLResult:
    """What `convert_d4rl` wrote."""

    out: str
    demos: int
    transitions: int
    trailing_steps: int
    """Steps of the unterminated episode at the end of the file (0 if none)."""
    trailing_kept: bool
    env_name: str
    env_name_source: str
    """"argument", "metadata" or "file name"."""
    next_obs_source: str
    """"next_observations" or "derived"."""
    obs_keys: list[str] = field(default_factory=list)
    skipped_infos: list[str] = field(default_factory=list)
    """infos/* arrays not turned into observations (length differs from the stream)."""


def episode_bounds(
    terminals: np.ndarray, timeouts: np.ndarray | None, keep_trailing: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Start and stop (exclusive) of each episode, and the length of the trailing one.

    An episode ends at each step where `terminals` or `timeouts` is set; the steps after
    the last such step form the trailing, unterminated episode.
    """
    ends = np.asarray(terminals).reshape(-1) != 0
    if timeouts is not None:
        ends = ends | (np.asarray(timeouts).reshape(-1) != 0)
    n = ends.shape[0]
    stops = np.flatnonzero(ends) + 1
    trailing = int(n - (stops[-1] if stops.size else 0))
    if trailing and keep_trailing:
        stops = np.append(stops, n)
    starts = np.concatenate([[0], stops[:-1]]) if stops.size else np.zeros(0, dtype=np.int64)
    return starts.astype(np.int64), stops.astype(np.int64), trailing


def derive_next_in_block(values: np.ndarray, last_steps: np.ndarray) -> np.ndarray:
    """next[t] = values[t+1], except at each episode's last step, which repeats values[t]."""
    nxt = np.empty_like(values)
    nxt[:-1] = values[1:]
    nxt[last_steps] = values[last_steps]
    return nxt


def _dataset(h5: h5py.File, name: str, path: str) -> h5py.Dataset:
    parts = name.split("/")
    node = h5
    for part in parts:
        check_link_safe(node, part, path)
        node = node[part]
    if not isinstance(node, h5py.Dataset):
        raise ConversionError("is not a dataset", path, "/" + name)
    check_dataset_safe(node, path)
    return node


def _scalar_metadata(h5: h5py.File, path: str) -> dict:
    """Small scalar or text entries of the `metadata` group (policy weights are left out)."""
    out: dict = {}
    if "metadata" not in h5 or not isinstance(h5["metadata"], h5py.Group):
        return out
    check_link_safe(h5, "metadata", path)

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Dataset) or obj.shape is None or obj.size > 16:
            return
        if obj.is_virtual:
            return
        value = obj[()]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        elif isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                return
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (str, int, float, bool, list)):
            out[name] = value

    h5["metadata"].visititems(visit)
    return out


def _env_name_from_file(h5: h5py.File, metadata: dict) -> str | None:
    for key in ENV_NAME_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    for attrs in (h5.attrs, h5["metadata"].attrs if "metadata" in h5 else {}):
        for key in ENV_NAME_KEYS:
            if key in attrs:
                value = attrs[key]
                if isinstance(value, bytes):
                    value = value.decode("utf-8", errors="replace")
                if isinstance(value, str) and value:
                    return value
    return None


def _info_keys(h5: h5py.File, n: int, wanted, path: str) -> tuple[list[str], list[str]]:
    """infos/* datasets to turn into observations, and those skipped for a wrong length."""
    if not wanted:
        return [], []
    group = h5.get("infos")
    if group is None or not isinstance(group, h5py.Group):
        if wanted is True:
            return [], []
        raise ConversionError("no infos group, but info keys were asked for", path, "/infos")
    check_link_safe(h5, "infos", path)
    available = [k for k in sorted(group.keys()) if isinstance(group.get(k), h5py.Dataset)]
    names = available if wanted is True else list(wanted)
    keys, skipped = [], []
    for key in names:
        if key not in available:
            raise ConversionError(
                f"no array infos/{key} (infos holds: {', '.join(available) or 'nothing'})",
                path,
                f"/infos/{key}",
            )
        dset = _dataset(h5, f"infos/{key}", path)
        ok = dset.ndim >= 1 and dset.shape[0] == n and dset.dtype.kind in "biuf"
        if ok:
            keys.append(key)
        elif wanted is True:
            skipped.append(key)
        else:
            raise ConversionError(
                f"has shape {dset.shape} and dtype {dset.dtype}; an observation needs {n} numeric steps",
                path,
                dset.name,
            )
    if OBS_KEY in keys:
        raise ConversionError(
            f"infos/{OBS_KEY} would collide with obs/{OBS_KEY}", path, "/infos/flat"
        )
    return keys, skipped


def _blocks(starts: np.ndarray, stops: np.ndarray, bytes_per_step: int, block_bytes: int):
    """Split the episodes into runs of whole episodes of about `block_bytes` each."""
    steps_per_block = max(1, block_bytes // max(bytes_per_step, 1))
    i = 0
    count = len(starts)
    while i < count:
        limit = starts[i] + steps_per_block
        j = int(np.searchsorted(stops, limit, side="right"))
        j = max(j, i + 1)
        yield i, j
        i = j


@untrusted_input(error=ConversionError)  # h5py errors on a damaged source
def convert_d4rl(
    src: str | os.PathLike,
    out: str | os.PathLike,
    env_name: str | None = None,
    infos_as_obs: bool | Sequence[str] = False,
    dones_at_timeouts: bool = False,
    keep_trailing: bool = True,
    overwrite: bool = False,
    block_bytes: int = 256 << 20,
    progress: Callable[[int, int], None] | None = None,
) -> D4RLResult:
    """Convert the D4RL file `src` into a new robomimic-layout file `out` (see module doc).

    `infos_as_obs` is True for every `infos/*` array of the right length, or a list of
    info key names. The output is written atomically; `src` is opened read-only.
    """
    src, out = os.fspath(src), os.fspath(out)
    if os.path.exists(out) and same_file(src, out):
        raise ConversionError("the output would overwrite the source; choose another --out", out)
    if isinstance(infos_as_obs, str):
        infos_as_obs = [infos_as_obs]
    with open_h5(src, "r") as h5:
        for key in REQUIRED_KEYS:
            if key not in h5:
                raise ConversionError(f"no '{key}' array: not a D4RL file", src, "/" + key)
        obs = _dataset(h5, "observations", src)
        n = int(obs.shape[0]) if obs.ndim else 0
        arrays = {key: _dataset(h5, key, src) for key in REQUIRED_KEYS}
        has_timeouts = "timeouts" in h5
        if has_timeouts:
            arrays["timeouts"] = _dataset(h5, "timeouts", src)
        has_next = "next_observations" in h5
        if has_next:
            arrays["next_observations"] = _dataset(h5, "next_observations", src)
        for dset in arrays.values():
            if dset.ndim == 0 or dset.shape[0] != n:
                got = "a scalar" if dset.ndim == 0 else f"{dset.shape[0]} steps"
                raise ConversionError(f"has {got}, observations has {n}", src, dset.name)
            if dset.dtype.kind not in "biuf":
                raise ConversionError(f"dtype {dset.dtype} is not numeric", src, dset.name)
        for key in ("rewards", "terminals", "timeouts"):
            dset = arrays.get(key)
            if dset is not None and int(np.prod(dset.shape[1:], dtype=np.int64)) != 1:
                raise ConversionError(
                    f"shape {dset.shape}: one value per step expected", src, dset.name
                )
        if n == 0:
            raise ConversionError("the file holds no transitions", src, "/observations")
        if has_next and arrays["next_observations"].shape[1:] != obs.shape[1:]:
            raise ConversionError(
                f"shape {arrays['next_observations'].shape[1:]} differs from observations {obs.shape[1:]}",
                src,
                "/next_observations",
            )
        info_keys, skipped = _info_keys(h5, n, infos_as_obs, src)
        for key in info_keys:
            arrays[f"infos/{key}"] = _dataset(h5, f"infos/{key}", src)

        metadata = _scalar_metadata(h5, src)
        if env_name:
            source = "argument"
        else:
            env_name = _env_name_from_file(h5, metadata)
            source = "metadata"
            if not env_name:
                env_name = os.path.splitext(os.path.basename(src))[0]
                source = "file name"

        terminals = arrays["terminals"][()].reshape(-1) != 0
        timeouts = arrays["timeouts"][()].reshape(-1) != 0 if has_timeouts else None
        starts, stops, trailing = episode_bounds(terminals, timeouts, keep_trailing)
        if starts.size == 0:
            raise ConversionError(
                "no episode ends (no terminals or timeouts set) and the trailing episode was dropped",
                src,
                "/terminals",
            )
        bytes_per_step = sum(
            int(np.prod(d.shape[1:], dtype=np.int64)) * d.dtype.itemsize for d in arrays.values()
        )
        total = int(stops[-1])
        env_meta = {"env_name": env_name, "type": ENV_TYPE_GYM, "env_kwargs": {}}
        data_attrs = {"source_format": "d4rl"}
        if metadata:
            data_attrs["d4rl_metadata"] = json.dumps(metadata, default=str)

        obs_keys = [OBS_KEY, *info_keys]
        has_trailing = bool(trailing and keep_trailing)
        try:
            with DatasetWriter(
                out, env_meta=env_meta, atomic=True, overwrite=overwrite, data_attrs=data_attrs
            ) as writer:
                for i, j in _blocks(starts, stops, bytes_per_step, block_bytes):
                    b0, b1 = int(starts[i]), int(stops[j - 1])
                    block = {key: dset[b0:b1] for key, dset in arrays.items()}
                    local_starts = starts[i:j] - b0
                    local_stops = stops[i:j] - b0
                    last_steps = local_stops - 1
                    obs_block = {OBS_KEY: block["observations"]}
                    next_block = {
                        OBS_KEY: block["next_observations"]
                        if has_next
                        else derive_next_in_block(block["observations"], last_steps)
                    }
                    for key in info_keys:
                        obs_block[key] = block[f"infos/{key}"]
                        next_block[key] = derive_next_in_block(block[f"infos/{key}"], last_steps)
                    dones = (block["terminals"].reshape(-1) != 0).astype(np.int64)
                    if dones_at_timeouts:
                        ends = last_steps[:-1] if has_trailing and j == len(stops) else last_steps
                        dones[ends] = 1
                    rewards = block["rewards"].reshape(-1)
                    actions = block["actions"]
                    for a, b in zip(local_starts.tolist(), local_stops.tolist()):
                        writer.add_demo(
                            actions=actions[a:b],
                            obs={k: v[a:b] for k, v in obs_block.items()},
                            next_obs={k: v[a:b] for k, v in next_block.items()},
                            rewards=rewards[a:b],
                            dones=dones[a:b],
                        )
                        if progress is not None:
                            progress(b0 + b, total)
        except DemosetError:
            raise
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"cannot read the source ({first})", src) from None

    return D4RLResult(
        out=out,
        demos=int(starts.size),
        transitions=total,
        trailing_steps=trailing,
        trailing_kept=bool(trailing and keep_trailing),
        env_name=env_name,
        env_name_source=source,
        next_obs_source="next_observations" if has_next else "derived",
        obs_keys=obs_keys,
        skipped_infos=skipped,
    )
