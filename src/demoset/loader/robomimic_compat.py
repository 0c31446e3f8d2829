"""robomimic's names for the loader: keyword arguments, attributes and the multi-file dataset.

robomimic's training code builds its dataset with its own keyword names (`hdf5_path`,
`hdf5_cache_mode`, `filter_by_attribute`, ...) and then reads attributes and calls methods
that demoset's SequenceDataset spells differently or does not need. This module keeps that
translation in one place, so `sequence.py` keeps demoset's names only:

- `accepts_robomimic_names` wraps `SequenceDataset.__init__`: robomimic's spellings are
  renamed to demoset's, arguments robomimic has but demoset cannot honour are accepted only
  at the value that does nothing (else a ConfigError saying why), and an argument neither
  knows is a one-line ConfigError instead of a TypeError.
- `RobomimicAttributes` is a mixin giving robomimic's attribute names (`hdf5_path`,
  `n_frame_stack`, `hdf5_file`, ...) and `get_dataset_sampler()`.
- robomimic's MetaDataset arguments are in `robomimic_meta.py` (it needs meta.py, which
  needs this module through sequence.py).

Versions covered: robomimic 0.3.0 and its later releases (0.4, 0.5 and HEAD: `action_keys`,
`action_config`, `demo_limit`, `lang`), and the names of its robocasa and dexmimicgen
branches (`shuffled_obs_key_groups`, `lang_encoder`, `dataset_lang`, `first_n_demos`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from demoset.errors import ConfigError

# robomimic's spelling -> demoset's (same meaning)
RENAMES: dict[str, str] = {
    "hdf5_path": "path",
    "hdf5_cache_mode": "cache_mode",
    "hdf5_use_swmr": "swmr",
    "hdf5_normalize_obs": "normalize_obs",
    "filter_by_attribute": "filter_key",
    "first_n_demos": "demo_limit",  # robomimic's dexmimicgen branch
}

# robomimic arguments demoset has no counterpart for, accepted only where they do nothing
INERT: dict[str, str] = {
    "lang": "language embeddings (robomimic's CLIP encoder) are not supported",
    "lang_encoder": "language embeddings (robomimic's CLIP encoder) are not supported",
    "dataset_lang": "language embeddings (robomimic's CLIP encoder) are not supported",
    "shuffled_obs_key_groups": (
        "swapping observation key groups at random per sample is not supported"
    ),
}


def _inert(value: Any) -> bool:
    """True for the values with which an INERT argument changes nothing (None, empty)."""
    if value is None:
        return True
    return isinstance(value, (list, tuple, dict)) and len(value) == 0


def translate_kwargs(kwargs: Mapping[str, Any], accepted: Sequence[str]) -> dict[str, Any]:
    """Keyword arguments in robomimic's or demoset's names -> demoset's names.

    `accepted` lists demoset's own argument names. Raises ConfigError for an argument
    neither project knows, for one given under both names, and for a robomimic argument
    demoset cannot honour at a value that would change the samples.
    """
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for name, value in kwargs.items():
        if name in INERT:
            if not _inert(value):
                raise ConfigError(f"SequenceDataset: {name}={value!r}: {INERT[name]}")
            continue
        target = RENAMES.get(name, name)
        if target not in accepted:
            raise ConfigError(f"SequenceDataset got an unknown argument {name!r}")
        if target in out:
            raise ConfigError(
                f"SequenceDataset got {target!r} twice (as {given_as[target]!r} and as {name!r})"
            )
        out[target] = value
        given_as[target] = name
    return out


def accepts_robomimic_names(init: Callable) -> Callable:
    """Decorate `SequenceDataset.__init__` so it also takes robomimic's keyword names.

    Positional arguments keep demoset's order (path, obs_keys, dataset_keys, ...), which
    agrees with robomimic 0.3.0's for the first three; robomimic's own code passes keywords.
    """
    signature = inspect.signature(init)
    params = [p for p in signature.parameters.values() if p.name != "self"]
    accepted = [p.name for p in params]
    positional = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if len(args) > len(positional):
            raise ConfigError(
                f"SequenceDataset takes at most {len(positional)} positional arguments, got {len(args)}"
            )
        named = translate_kwargs(kwargs, accepted)
        for name in positional[: len(args)]:
            if name in named:
                raise ConfigError(f"SequenceDataset got {name!r} twice (by position and by name)")
        required = [
            p.name
            for p in params[len(args) :]
            if p.default is inspect.Parameter.empty and p.name not in named
        ]
        if required:
            robomimic = {v: k for k, v in RENAMES.items()}.get(required[0])
            also = f" (robomimic: {robomimic!r})" if robomimic else ""
            raise ConfigError(f"SequenceDataset needs the argument {required[0]!r}{also}")
        return init(self, *args, **named)

    return wrapper


class RobomimicAttributes:
    """robomimic's attribute and method names on demoset's SequenceDataset.

    The mixin reads the dataset's own fields (`path`, `cache_mode`, `swmr`, ...); nothing
    here changes what a sample holds.
    """

    path: str
    cache_mode: str | None
    swmr: bool
    normalize_obs: bool
    filter_key: str | None
    frame_stack: int

    @property
    def hdf5_path(self) -> str:
        return self.path

    @property
    def hdf5_cache_mode(self) -> str | None:
        return self.cache_mode

    @property
    def hdf5_use_swmr(self) -> bool:
        return self.swmr

    @property
    def hdf5_normalize_obs(self) -> bool:
        return self.normalize_obs

    @property
    def filter_by_attribute(self) -> str | None:
        return self.filter_key

    @property
    def n_frame_stack(self) -> int:
        return self.frame_stack

    @property
    def obs_normalization_stats(self) -> dict | None:
        """robomimic's attribute: the statistics when hdf5_normalize_obs is on, else None."""
        return self.get_obs_normalization_stats() if self.normalize_obs else None

    @property
    def action_normalization_stats(self) -> dict:
        return self.get_action_normalization_stats()

    @action_normalization_stats.setter
    def action_normalization_stats(self, stats: Mapping) -> None:
        self.set_action_normalization_stats(stats)

    def get_dataset_sampler(self) -> None:
        """robomimic's hook for a custom sampler: None, so the DataLoader shuffles (as robomimic)."""
        return None

    @property
    def hdf5_file(self):
        """A read-only h5py handle on the dataset file, opened on first use (robomimic's attribute).

        demoset's batches do not use it; it is for code that reads the file through the
        dataset. `close_and_delete_hdf5_handle()` closes it; it is not passed to workers.
        """
        handle = self.__dict__.get("_robomimic_h5")
        if handle is None or not handle.id.valid:
            from demoset.format import open_h5

            handle = open_h5(self.path, "r", swmr=self.swmr)
            self.__dict__["_robomimic_h5"] = handle
        return handle

    def close_and_delete_hdf5_handle(self) -> None:
        """Close the handle `hdf5_file` opened, if any (robomimic's method)."""
        handle = self.__dict__.pop("_robomimic_h5", None)
        if handle is not None and handle.id.valid:
            handle.close()

    @contextlib.contextmanager
    def hdf5_file_opened(self):
        """`hdf5_file` for the duration of a with-block; closed after unless it was open before."""
        was_open = self.__dict__.get("_robomimic_h5") is not None
        try:
            yield self.hdf5_file
        finally:
            if not was_open:
                self.close_and_delete_hdf5_handle()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_robomimic_h5", None)  # an h5py handle does not cross to a worker
        return state
