"""Filter keys: named subsets of demos stored under `mask/<name>`.

Edits touch only the small `mask` group, never the demo arrays, so they take milliseconds
even on a 10 GB image file. A replaced key is written under a temporary name first and
moved into place, so an interruption leaves either the old key or the new one.

`split_train_valid` with the default seed picks exactly the demos that robomimic's
`split_train_val.py` picks: it shuffles a 0/1 mask over the lexicographically sorted demo
names with NumPy's legacy generator seeded with 0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np

from demoset.errors import DemoNotFoundError, FilterKeyError, WriteError
from demoset.format import constants as C
from demoset.format import edit_in_place, open_dataset
from demoset.fsutil import is_enospc

_VALID_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _check_name(name: str, path: str) -> None:
    if not name or not _VALID_NAME.match(name) or name.startswith("."):
        raise FilterKeyError(
            f"invalid filter key name {name!r} (letters, digits, '_', '-', '.')",
            path,
            f"/mask/{name}",
        )


def list_filter_keys(path: str | os.PathLike) -> dict[str, list[str]]:
    """Every filter key with its demos (stored order)."""
    with open_dataset(path) as df:
        return {key: df.filter_key_demos(key) for key in df.filter_keys}


def _write_key(h5: h5py.File, name: str, demos: list[str]) -> None:
    mask = h5.require_group(C.MASK_GROUP)
    tmp = f".{name}.tmp"
    if tmp in mask:
        del mask[tmp]
    mask.create_dataset(tmp, data=np.array([d.encode("utf-8") for d in demos], dtype="S"))
    h5.flush()
    if name in mask:
        del mask[name]
    mask.move(tmp, name)
    h5.flush()


def _edit(path: str, action) -> None:
    # edit_in_place journals the edit: a kill at any moment leaves the old keys or the new.
    try:
        with edit_in_place(path) as h5:
            action(h5)
    except OSError as exc:
        if is_enospc(exc):
            raise WriteError("no space left on device while editing filter keys", path) from None
        raise WriteError(f"editing filter keys failed ({str(exc).splitlines()[0]})", path) from None


def create_filter_key(
    path: str | os.PathLike, name: str, demos: list[str], overwrite: bool = False
) -> list[str]:
    """Create filter key `name` naming `demos` (checked to exist); returns the demos written."""
    path = os.fspath(path)
    _check_name(name, path)
    with open_dataset(path) as df:
        known = set(df.demos)
        existing = df.filter_keys
    missing = [d for d in demos if d not in known]
    if missing:
        raise DemoNotFoundError(
            f"no demo named {missing[0]!r} (asked for filter key {name!r})",
            path,
            f"/data/{missing[0]}",
        )
    if len(set(demos)) != len(demos):
        raise FilterKeyError("the same demo is named twice", path, f"/mask/{name}")
    if name in existing and not overwrite:
        raise FilterKeyError(
            f"filter key {name!r} exists; pass overwrite to replace it", path, f"/mask/{name}"
        )
    demos = list(demos)
    _edit(path, lambda h5: _write_key(h5, name, demos))
    return demos


def delete_filter_key(path: str | os.PathLike, name: str) -> None:
    """Delete filter key `name` (raises FilterKeyError when it does not exist)."""
    path = os.fspath(path)
    with open_dataset(path) as df:
        if name not in df.filter_keys:
            raise FilterKeyError(f"no filter key {name!r}", path, f"/mask/{name}")

    def action(h5: h5py.File) -> None:
        del h5[C.MASK_GROUP][name]

    _edit(path, action)


def rename_filter_key(path: str | os.PathLike, old: str, new: str, overwrite: bool = False) -> None:
    """Rename filter key `old` to `new`."""
    path = os.fspath(path)
    _check_name(new, path)
    with open_dataset(path) as df:
        keys = df.filter_keys
    if old not in keys:
        raise FilterKeyError(f"no filter key {old!r}", path, f"/mask/{old}")
    if new in keys and not overwrite:
        raise FilterKeyError(
            f"filter key {new!r} exists; pass overwrite to replace it", path, f"/mask/{new}"
        )

    def action(h5: h5py.File) -> None:
        mask = h5[C.MASK_GROUP]
        if new in mask:
            del mask[new]
        mask.move(old, new)

    _edit(path, action)


def _source_demos(df, filter_key: str | None) -> list[str]:
    return df.demos_for(filter_key) if filter_key else df.demos


def split_demos(demos: list[str], ratio: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """robomimic's split rule: int(ratio * n) validation demos chosen by a seeded shuffle.

    Demo names are sorted as text first (as robomimic does) so the same seed gives the
    same split; the returned lists are in that text order.
    """
    if not 0.0 <= ratio < 1.0:
        raise FilterKeyError(f"ratio must be in [0, 1), got {ratio}")
    ordered = sorted(demos)
    n = len(ordered)
    num_valid = int(ratio * n)
    mask = np.zeros(n)
    mask[:num_valid] = 1.0
    np.random.RandomState(seed).shuffle(mask)
    mask = mask.astype(int)
    train = [ordered[i] for i in (1 - mask).nonzero()[0]]
    valid = [ordered[i] for i in mask.nonzero()[0]]
    return train, valid


def train_valid_keys(demos: list[str], ratio: float, seed: int = 0) -> dict[str, list[str]]:
    """`train` and `valid` filter keys by robomimic's rule (`split_demos`), or {} for no split.

    For converters of sources without a split of their own: a ratio of 0 or less, fewer than
    two demos, or a ratio too small to give one valid demo writes no split rather than an
    empty key. A ratio of 1 or more still fails as in `split_demos`.
    """
    if ratio > 0 and len(demos) > 1:
        train, valid = split_demos(demos, ratio, seed)
        if valid:
            return {"train": train, "valid": valid}
    return {}


def keys_among(filter_keys: Mapping[str, Any], demos: Iterable[str]) -> dict[str, list[str]]:
    """Each filter key restricted to `demos`; keys that are not lists or end up empty go.

    For converters that give back an exported file's filter keys: the new file must name
    only demos it holds, and a key with none of them left would select nothing.
    """
    known = set(demos)
    return {
        key: [m for m in members if m in known]
        for key, members in filter_keys.items()
        if isinstance(members, list) and any(m in known for m in members)
    }


def split_train_valid(
    path: str | os.PathLike,
    ratio: float = 0.1,
    seed: int = 0,
    filter_key: str | None = None,
    names: tuple[str, str] | None = None,
) -> dict[str, list[str]]:
    """Write train/valid filter keys (`<filter_key>_train`/`_valid` with a source key).

    Returns {train_name: demos, valid_name: demos}. Existing keys of those names are
    replaced, as robomimic's script does.
    """
    path = os.fspath(path)
    with open_dataset(path) as df:
        demos = _source_demos(df, filter_key)
    train, valid = split_demos(demos, ratio, seed)
    if names is None:
        names = (f"{filter_key}_train", f"{filter_key}_valid") if filter_key else ("train", "valid")
    for name in names:
        _check_name(name, path)

    def action(h5: h5py.File) -> None:
        _write_key(h5, names[0], train)
        _write_key(h5, names[1], valid)

    _edit(path, action)
    return {names[0]: train, names[1]: valid}


def size_subset(demos: list[str], n: int, mode: str = "first", seed: int = 0) -> list[str]:
    """N demos: the first N in numeric order, or N at random (seeded).

    Random subsets are prefixes of one seeded permutation, so they are nested: the subset
    for N=10 is inside the one for N=20 with the same seed.
    """
    ordered = C.sorted_demos(demos)
    if n < 0:
        raise FilterKeyError(f"number of demos must be positive, got {n}")
    if n > len(ordered):
        raise FilterKeyError(f"asked for {n} demos but only {len(ordered)} are available")
    if mode == "first":
        return ordered[:n]
    if mode == "random":
        order = np.random.default_rng(seed).permutation(len(ordered))
        chosen = sorted(order[:n].tolist())
        return [ordered[i] for i in chosen]
    raise FilterKeyError(f"mode must be 'first' or 'random', got {mode!r}")


def filter_by_size(
    path: str | os.PathLike,
    num_demos: int,
    mode: str = "first",
    seed: int = 0,
    filter_key: str | None = None,
    name: str | None = None,
    overwrite: bool = True,
) -> tuple[str, list[str]]:
    """Write a filter key with `num_demos` demos; returns (name, demos).

    The default name is `<N>_demos`, or `<filter_key>_<N>_demos` with a source key.
    """
    path = os.fspath(path)
    with open_dataset(path) as df:
        demos = _source_demos(df, filter_key)
        existing = df.filter_keys
    chosen = size_subset(demos, num_demos, mode, seed)
    name = name or (f"{filter_key}_{num_demos}_demos" if filter_key else f"{num_demos}_demos")
    _check_name(name, path)
    if name in existing and not overwrite:
        raise FilterKeyError(f"filter key {name!r} exists", path, f"/mask/{name}")
    _edit(path, lambda h5: _write_key(h5, name, chosen))
    return name, chosen
