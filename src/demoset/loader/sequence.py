"""SequenceDataset: robomimic's sequence windows, served from flat arrays.

Gives exactly the samples robomimic 0.3.0's `robomimic.utils.dataset.SequenceDataset`
gives (same windows, padding, pad masks, goals and normalisation; see `index.py` for the
window rules), plus robomimic's later `action_keys` / `action_config` / `demo_limit`, and
needs no global set-up call. Instead of a dict per sample or cached overlapping windows,
each key of the selected demos is one flat array (in shared memory, or read from the file
per window; see `store.py`) and a batch is one vectorised gather per key.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch.utils.data

from demoset.errors import ConfigError, LayoutError
from demoset.format import DemoFile, guarded_method, read_stats
from demoset.loader import stats as S
from demoset.loader.alloc import BatchPlan, release_free_heap
from demoset.loader.batch import SampleBatch, register_default_collate, sample_of
from demoset.loader.index import WindowIndex
from demoset.loader.layout import ArrayLayout, bytes_per_frame, is_image_like, plan_layout
from demoset.loader.ram_chunks import decodable_keys
from demoset.loader.reader import DemoReader, resolve_arrays
from demoset.loader.robomimic_compat import RobomimicAttributes, accepts_robomimic_names
from demoset.loader.threads import batch_threads, thread_pool
from demoset.memory import ensure_fits, format_bytes

register_default_collate()  # torch's default collate takes the SampleBatch fast path

CACHE_MODES = ("all", "low_dim", None)
DEMOS_PER_STEP = 16
IMAGE_FORMATS = ("hwc_uint8", "chw_float")


def to_chw_float(x: np.ndarray, plan: BatchPlan) -> np.ndarray:
    """(..., H, W, C) -> float32 (..., C, H, W); uint8 scaled to [0, 1] as robomimic's process_frame."""
    moved = np.moveaxis(x, -1, -3)
    out = plan.empty(moved.shape, np.float32)
    if x.dtype == np.uint8:
        np.divide(moved, np.float32(255.0), out=out)
    else:
        out[...] = moved
    return out


class SequenceDataset(RobomimicAttributes, torch.utils.data.Dataset):
    """Fixed-length windows of a robomimic-layout dataset, robomimic's semantics, at memory speed.

    Arguments mean what robomimic's mean (robomimic's names in brackets):

    path (hdf5_path); obs_keys; dataset_keys: arrays of a demo such as "actions",
    "rewards", "dones", "states" or "action_dict/abs_pos" (float32, windowed like obs; a
    key no demo has reads as zeros of shape (1,)); frame_stack, seq_length,
    pad_frame_stack, pad_seq_length, get_pad_mask, goal_mode (None or "last": the goal is
    next_obs at the last step a window may start its sequence at); cache_mode
    (hdf5_cache_mode): "all" holds every array in shared RAM, "low_dim" everything but
    images (per-step shape (H, W, C)), None nothing; swmr (hdf5_use_swmr): follow a file a
    demoset writer appends to, never holding an HDF5 lock between batches;
    normalize_obs (hdf5_normalize_obs): normalise non-image observations with
    `get_obs_normalization_stats()`; filter_key (filter_by_attribute); load_next_obs.

    Rules where robomimic 0.3.0 has none (robomimic's later versions' meaning):

    - action_keys: arrays concatenated, after normalisation, into "actions" (each key also
      stays in the sample raw, under its own name). None means ("actions",) when "actions"
      is a dataset key, unnormalised - the same values as robomimic 0.3.0.
    - action_config: {key: {"normalization": None | "min_max" | "gaussian"}} (other entries
      such as "format" are ignored; a key absent from it is not normalised). See
      `demoset.loader.stats` for the exact formulas.
    - demo_limit: keep only the first `demo_limit` demos (numeric order, after filter_key).
    - image_format: "hwc_uint8" returns images as stored; "chw_float" returns image-like
      observations as float32 (C, H, W), uint8 divided by 255 (robomimic's process_frame).
    - normalize_obs normalises obs, next_obs and goal_obs of non-image keys with the obs
      statistics (robomimic 0.3.0 asserts unless the window has one step; values are the
      same where it works). Image keys are never normalised.
    - stats_cache: keep normalisation moments in a file beside the dataset (default True).
    - progress: optional `progress(done, total)` callback while caching (frames).
    - next_obs_views: where an image key's next_obs is its obs one step on, a batch
      without padded windows gets its obs and next_obs as two views of one block (cached:
      `shifted.py`, which also holds them once; from the file: `file_pair.py`): an
      in-place change to one shows in the other. False gives them separate memory (the
      same values).
    - cache_compressed: with cache_mode "all", image keys stored compressed in chunks
      demoset decodes itself (zstd / Blosc / deflate / shuffle with Fletcher-32, whole
      frames per chunk: what `demoset compress` writes with `zstd` and `lz4hc`) are held
      in shared RAM as their stored chunks, about the file's bytes instead of the
      frames', and decoded per batch (each chunk once): datasets several times larger
      than RAM can be cached, at the cost of decoding. Other image storage (Blosc2, LZ4,
      uncompressed) is cached raw as without it. Checksums are checked while loading.
      See `ram_chunks.py`.

    robomimic's keyword names (hdf5_path, hdf5_cache_mode, ...) and attributes (hdf5_path,
    n_frame_stack, hdf5_file, get_dataset_sampler, ...) work too: see `robomimic_compat.py`.

    Samples (`ds[i]`) are dicts of numpy arrays like robomimic's: each dataset key
    [T, ...], "pad_mask" [T, 1] (get_pad_mask), "obs" / "next_obs" {key: [T, ...]} (with
    "pad_mask" too), "goal_obs" {key: [...]}, "actions" and "index" (the sample index),
    T = frame_stack - 1 + seq_length. `__getitems__` returns a `SampleBatch`; use
    `collate_fn=demoset.loader.collate` in a DataLoader for the zero-copy path, or
    `get_batch(indices)` for the collated numpy dict.
    """

    @accepts_robomimic_names  # robomimic's keyword names too (robomimic_compat.py)
    @guarded_method  # h5py errors on a damaged file become one LayoutError
    def __init__(
        self,
        path: str | os.PathLike,
        obs_keys: Sequence[str],
        dataset_keys: Sequence[str] = ("actions",),
        action_keys: Sequence[str] | None = None,
        action_config: Mapping | None = None,
        frame_stack: int = 1,
        seq_length: int = 1,
        pad_frame_stack: bool = True,
        pad_seq_length: bool = True,
        get_pad_mask: bool = False,
        goal_mode: str | None = None,
        cache_mode: str | None = "low_dim",
        swmr: bool = True,
        normalize_obs: bool = False,
        filter_key: str | None = None,
        load_next_obs: bool = True,
        demo_limit: int | None = None,
        image_format: str = "hwc_uint8",
        stats_cache: bool = True,
        progress: Callable[[int, int], None] | None = None,
        next_obs_views: bool = True,
        cache_compressed: bool = False,
    ):
        super().__init__()
        self.demos: list[str] = []
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if isinstance(obs_keys, str) or isinstance(dataset_keys, str):
            raise ConfigError("obs_keys and dataset_keys are lists of keys, not a single string")
        self.obs_keys = tuple(obs_keys)
        self.dataset_keys = tuple(dataset_keys)
        if cache_mode not in CACHE_MODES:
            raise ConfigError(f"cache_mode must be 'all', 'low_dim' or None, got {cache_mode!r}")
        if goal_mode not in (None, "last"):
            raise ConfigError(f"goal_mode must be None or 'last', got {goal_mode!r}")
        if goal_mode == "last" and not load_next_obs:
            raise ConfigError(
                "goal_mode='last' takes the goal from next_obs; it needs load_next_obs=True"
            )
        if image_format not in IMAGE_FORMATS:
            raise ConfigError(
                f"image_format must be 'hwc_uint8' or 'chw_float', got {image_format!r}"
            )
        self.next_obs_views = bool(next_obs_views)
        if cache_compressed and cache_mode != "all":
            raise ConfigError(
                f"cache_compressed=True holds image chunks in RAM: it needs cache_mode='all', "
                f"got {cache_mode!r}"
            )
        self.cache_compressed = bool(cache_compressed)
        if demo_limit is not None and int(demo_limit) < 1:
            raise ConfigError(f"demo_limit must be a positive number of demos, got {demo_limit}")
        self.frame_stack = int(frame_stack)
        self.seq_length = int(seq_length)
        self.pad_frame_stack = bool(pad_frame_stack)
        self.pad_seq_length = bool(pad_seq_length)
        self.get_pad_mask = bool(get_pad_mask)
        self.goal_mode = goal_mode
        self.cache_mode = cache_mode
        self.swmr = bool(swmr)
        self.normalize_obs = bool(normalize_obs)
        self.filter_key = filter_key
        self.load_next_obs = bool(load_next_obs)
        self.demo_limit = None if demo_limit is None else int(demo_limit)
        self.image_format = image_format
        if action_keys is None:
            self.action_keys = ("actions",) if "actions" in self.dataset_keys else ()
        else:
            if isinstance(action_keys, str):
                raise ConfigError("action_keys is a list of keys, not a single string")
            self.action_keys = tuple(action_keys)
        self.action_config = copy.deepcopy(dict(action_config)) if action_config else {}
        self._action_methods = S.check_action_config(self.action_keys, self.action_config)
        # dataset keys in the sample: the given ones, then action keys not among them
        self._sample_keys = self.dataset_keys + tuple(
            k for k in self.action_keys if k not in self.dataset_keys
        )
        self._stats_cache = S.StatsCache(self.path, enabled=stats_cache)
        self._obs_stats: dict | None = None
        self._action_stats: dict | None = None
        # (key, its array's name) of each obs group, so a batch does not format names
        self._group_keys = {
            group: [(key, f"{group}/{key}") for key in self.obs_keys]
            for group in ("obs", "next_obs")
        }

        self._reader = DemoReader(self.path, self.swmr)
        self._lengths = np.zeros(0, dtype=np.int64)
        self._index = WindowIndex(np.zeros(0), self.frame_stack, self.seq_length)
        with self._reader.session():
            df = self._reader.demofile()
            demos = self._select_demos(df)
            if not demos:
                where = f"filter key {filter_key!r}" if filter_key else "the file"
                raise ConfigError(f"{where} has no demos to load", self.path)
            self._specs = self._resolve_specs(df, demos[0])
            self._layout: ArrayLayout = plan_layout(
                self._specs,
                self.obs_keys,
                self._sample_keys,
                self.load_next_obs,
                self.cache_mode,
                self._reader,
                self._chunk_keys(demos[0]),
            )
            finish = self._add_demos(df, demos, progress)
        finish()
        del finish, df  # their temporaries (byte offsets, HDF5 objects) go before the trim
        if not self.swmr:
            self._reader.close()  # reopened on demand; an idle handle would lock writers out
        release_free_heap()
        if self.normalize_obs:
            self._obs_stats = self._compute_obs_stats()
        if any(m is not None for m in self._action_methods.values()):
            self._action_stats = self._compute_action_stats()

    # ------------------------------------------------------------------ set-up
    def _select_demos(self, df: DemoFile) -> list[str]:
        demos = df.demos_for(self.filter_key)
        if self.demo_limit is not None:
            demos = demos[: self.demo_limit]
        return demos

    def _resolve_specs(
        self, df: DemoFile, demo: str
    ) -> dict[str, tuple[tuple[int, ...], np.dtype] | None]:
        """Per-step shape and dtype of every array the samples need (None: a missing dataset key)."""
        specs: dict[str, tuple[tuple[int, ...], np.dtype] | None] = {}
        obs_info = df.obs_keys(demo)
        missing = [k for k in self.obs_keys if k not in obs_info]
        if missing:
            raise LayoutError(
                f"no observation {missing[0]!r} (observations: {', '.join(obs_info) or 'none'})",
                self.path,
                f"/data/{demo}/obs/{missing[0]}",
            )
        groups = ["obs"] + (["next_obs"] if self.load_next_obs else [])
        if "next_obs" in groups:
            next_info = df.next_obs_keys(demo)
            missing = [k for k in self.obs_keys if k not in next_info]
            if missing:
                raise LayoutError(
                    f"no next observation {missing[0]!r}; pass load_next_obs=False to do without",
                    self.path,
                    f"/data/{demo}/next_obs/{missing[0]}",
                )
        for group in groups:
            for key in self.obs_keys:
                dset = df.dataset(demo, f"{group}/{key}")
                if dset.dtype.kind not in "biuf":  # strings, compounds: nothing to batch
                    raise LayoutError(
                        f"{key!r} is not numeric ({dset.dtype})", self.path, dset.name
                    )
                specs[f"{group}/{key}"] = (tuple(dset.shape[1:]), dset.dtype)
        for key in self._sample_keys:
            if df.has(demo, key):
                dset = df.dataset(demo, key)
                if dset.dtype.kind not in "biuf":
                    raise LayoutError(
                        f"{key!r} is not numeric ({dset.dtype})", self.path, dset.name
                    )
                specs[key] = (tuple(dset.shape[1:]), dset.dtype)
            else:
                specs[key] = None
        for key in self.action_keys:
            spec = specs[key]
            if spec is not None and len(spec[0]) > 1:
                raise ConfigError(
                    f"action key {key!r} has per-step shape {spec[0]}; action keys must be vectors"
                )
        return specs

    def _chunk_keys(self, demo: str) -> frozenset[str]:
        """Image keys held as compressed chunks (`cache_compressed`): those whose array in
        `demo` demoset decodes from its stored chunks."""
        if not self.cache_compressed:
            return frozenset()
        images = [
            key
            for key, spec in self._specs.items()
            if spec is not None and key.split("/")[0] in ("obs", "next_obs")
            if is_image_like(spec[0])
        ]
        return decodable_keys(self._reader, demo, images)

    def _check_memory(self, frames: int, what: str, chunk_bytes: int = 0) -> None:
        """Refuse a cache that would not fit: `frames` frames of every key, keys held as
        compressed chunks counted as `chunk_bytes` (their stored bytes) instead."""
        if self.cache_mode is None:
            return
        chunked = self._layout.chunk_keys
        per_frame = bytes_per_frame(self._specs, self._sample_keys, self.cache_mode, chunked)
        need = frames * per_frame + chunk_bytes
        suggestion = None
        if self.cache_mode == "all":
            low = frames * bytes_per_frame(self._specs, self._sample_keys, "low_dim")
            suggestion = (
                f"use cache_mode='low_dim' (needs {format_bytes(low)}) to read images from the file"
                if low < need
                else "use cache_mode=None to read every window from the file"
            )
        else:
            suggestion = "use cache_mode=None to read every window from the file"
        mode = f"cache_mode={self.cache_mode!r}" + (
            " and cache_compressed=True" if self.cache_compressed else ""
        )
        ensure_fits(need, f"{what} with {mode}", self.path, suggestion)

    def _check_demo(self, df: DemoFile, demo: str, length: int) -> None:
        """Every array the samples read must exist with the first demo's shape and enough steps."""
        found = resolve_arrays(df, demo, self._specs)
        for key, spec in self._specs.items():
            dset = found[key]
            if spec is None:
                if dset is not None:
                    raise LayoutError(
                        f"{key!r} is in this demo but not in the first one; dataset keys must be "
                        "in all demos or none",
                        self.path,
                        dset.name,
                    )
                continue
            if dset is None:
                raise LayoutError(f"no array {key!r}", self.path, f"/data/{demo}/{key}")
            shape, dtype = dset.shape, dset.dtype
            if tuple(shape[1:]) != spec[0] or dtype != spec[1]:
                raise LayoutError(
                    f"{key!r} has per-step shape {tuple(shape[1:])} {dtype}, other demos {spec[0]} {spec[1]}",
                    self.path,
                    dset.name,
                )
            if shape[0] < length:
                raise LayoutError(
                    f"{key!r} has {shape[0]} steps, fewer than num_samples={length}",
                    self.path,
                    dset.name,
                )
            self._reader.remember(demo, key, dset)

    def _add_demos(self, df: DemoFile, demos: list[str], progress=None) -> Callable[[], None]:
        """Check and index `demos` after the current ones (inside a reader session).

        Returns the function that reads their cached arrays by byte offset, which runs
        after the session (in follow mode: without keeping a writer's commit waiting).
        """
        lengths = df.lengths(demos)
        all_lengths = np.concatenate([self._lengths, lengths]).astype(np.int64)
        index = WindowIndex(
            all_lengths,
            self.frame_stack,
            self.seq_length,
            self.pad_frame_stack,
            self.pad_seq_length,
            demo_names=self.demos + list(demos),
        )
        chunk_bytes = sum(  # held and to come, of keys held as compressed chunks
            array.nbytes + array.measure(self._reader, demos, lengths)
            for array in self._layout.chunk_storage
        )
        what = "caching" if not self.demos else "refresh"
        self._check_memory(int(all_lengths.sum()), what, chunk_bytes)
        total = int(lengths.sum()) * len(self._specs)
        done = [0]

        def step(frames: int) -> None:
            done[0] += frames
            if progress is not None:
                progress(done[0], total)

        frames, count = int(self._lengths.sum()), len(self.demos)
        finishers = []
        try:
            for array in self._layout.storage:
                array.reserve(int(all_lengths.sum()), len(all_lengths))
            # a few demos at a time: every open HDF5 dataset costs ~20 KB that HDF5 keeps
            for at in range(0, len(demos), DEMOS_PER_STEP):
                part, part_lengths = (
                    list(demos[at : at + DEMOS_PER_STEP]),
                    lengths[at : at + DEMOS_PER_STEP],
                )
                for demo, length in zip(part, part_lengths):
                    self._check_demo(df, demo, int(length))
                for array in self._layout.storage:
                    finishers.append(array.append(self._reader, part, part_lengths, step))
                self._reader.forget()
        except BaseException:
            self._truncate(frames, count)
            raise

        def finish() -> None:
            try:
                for f in finishers:
                    if f is not None:
                        f()
            except BaseException:
                self._truncate(frames, count)
                raise
            self.demos = self.demos + list(demos)
            self._lengths = all_lengths
            self._index = index

        return finish

    def _truncate(self, frames: int, count: int) -> None:
        """Forget frames and demos added by an append that failed half-way."""
        for array in self._layout.storage:
            array.truncate(frames, count)

    # ------------------------------------------------------------------ stats
    def _moments(self, key: str) -> S.Moments:
        array = self._layout.arrays[key]
        starts = self._index.starts

        def compute() -> S.Moments:
            with self._reader.session():
                stored = read_stats(self._reader.demofile().h5, key, self.demos, self._lengths)
                if stored is not None:  # statistics stored in the file: no pass over the data
                    return S.merge_moments(
                        S.Moments(p.count, p.mean, p.m2, p.min, p.max) for p in stored
                    )
                parts = array.demo_arrays(self._reader, self.demos, self._lengths, starts)
                return S.compute_moments(parts)

        return self._stats_cache.get(key, self.demos, self._lengths, compute)

    def _normalized_obs_keys(self) -> list[str]:
        return [k for k in self.obs_keys if not is_image_like(self._specs[f"obs/{k}"][0])]

    def _compute_obs_stats(self) -> dict:
        return S.obs_normalization_stats(
            {k: self._moments(f"obs/{k}") for k in self._normalized_obs_keys()}
        )

    def _compute_action_stats(self) -> dict:
        return S.action_normalization_stats(self.action_moments(), self._action_methods)

    def action_moments(self) -> dict[str, S.Moments]:
        """Exact moments of each action key over the selected demos (as (N, D) vectors)."""
        out = {}
        for key in self.action_keys:
            if self._specs[key] is None:
                zero = np.zeros(1)
                out[key] = S.Moments(
                    int(self._lengths.sum()), zero, zero.copy(), zero.copy(), zero.copy()
                )
                continue
            m = self._moments(key)
            out[key] = S.Moments(m.n, *(np.atleast_1d(a) for a in (m.mean, m.m2, m.min, m.max)))
        return out

    def get_obs_normalization_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """{obs key: {"mean": [1, ...], "std": [1, ...]}} of the non-image obs keys (robomimic's)."""
        if self._obs_stats is None:
            self._obs_stats = self._compute_obs_stats()
        return copy.deepcopy(self._obs_stats)

    def set_obs_normalization_stats(self, stats: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Use given observation statistics (e.g. the training set's for a validation set)."""
        self._obs_stats = {
            k: {"mean": np.asarray(v["mean"]), "std": np.asarray(v["std"])}
            for k, v in stats.items()
        }

    def get_action_normalization_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """{action key: {"scale": [1, D], "offset": [1, D]}}: normalized = (raw - offset) / scale."""
        if self._action_stats is None:
            self._action_stats = self._compute_action_stats()
        return copy.deepcopy(self._action_stats)

    def set_action_normalization_stats(self, stats: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Use given action statistics (MetaDataset shares one set across its datasets)."""
        missing = [k for k in self.action_keys if k not in stats]
        if missing:
            raise ConfigError(f"action statistics lack action key {missing[0]!r}", self.path)
        self._action_stats = {
            k: {
                "scale": np.asarray(v["scale"], dtype=np.float32),
                "offset": np.asarray(v["offset"], dtype=np.float32),
            }
            for k, v in stats.items()
        }

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return len(self._index)

    @property
    def total_num_sequences(self) -> int:
        return len(self._index)

    @property
    def num_demos(self) -> int:
        return len(self.demos)

    @property
    def n_demos(self) -> int:
        """robomimic's name for num_demos."""
        return len(self.demos)

    @property
    def demo_lengths(self) -> dict[str, int]:
        return dict(zip(self.demos, (int(n) for n in self._lengths)))

    @property
    def cached_bytes(self) -> int:
        """Bytes of arrays held in RAM (shared memory)."""
        return self._layout.cached_bytes

    def __repr__(self) -> str:
        return (
            f"SequenceDataset(path={self.path!r}, obs_keys={self.obs_keys}, seq_length={self.seq_length}, "
            f"frame_stack={self.frame_stack}, filter_key={self.filter_key!r}, cache_mode={self.cache_mode!r}, "
            f"num_demos={self.num_demos}, num_sequences={len(self)})"
        )

    # ------------------------------------------------------------------ fetching
    def _obs_group(self, group: str, raw: dict, plan: BatchPlan) -> dict[str, np.ndarray]:
        keys = self._group_keys[group]
        if (self.normalize_obs and self._obs_stats) or self.image_format == "chw_float":
            out = {key: self._finish_obs(key, raw[name], plan) for key, name in keys}
        else:  # served as stored
            out = {key: raw[name] for key, name in keys}
        if self.get_pad_mask:
            out["pad_mask"] = plan.win.valid[..., None]
        return out

    def _finish_obs(self, key: str, x: np.ndarray, plan: BatchPlan) -> np.ndarray:
        if self.normalize_obs and self._obs_stats is not None and key in self._obs_stats:
            stats = self._obs_stats[key]
            x = (x - stats["mean"]) / stats["std"]
        elif self.image_format == "chw_float" and is_image_like(self._specs[f"obs/{key}"][0]):
            x = to_chw_float(x, plan)
        return x

    def _actions(self, out: dict) -> np.ndarray:
        stats = self._action_stats  # None when no key is normalised and none were set
        parts = []
        for key in self.action_keys:
            x = out[key]
            if x.ndim == 2:
                x = x[..., None]
            if stats is not None:
                x = (x - stats[key]["offset"][0]) / stats[key]["scale"][0]
            parts.append(x)
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts, axis=-1)

    def _gather(self, plan: BatchPlan) -> dict[str, np.ndarray]:
        """{array key: (B, T, ...)} of every key the batch reads: one take per pack, one
        gather (or file read) per pair or other key."""
        layout = self._layout
        raw: dict[str, np.ndarray] = {}

        def gather_pair(entry) -> None:
            pair, obs_key, next_key = entry
            if self.next_obs_views:
                raw[obs_key], raw[next_key] = pair.gather_both(plan)
            else:
                raw[obs_key] = pair.gather("obs", plan)
                raw[next_key] = pair.gather("next_obs", plan)

        # image keys side by side on the batch's threads: each is a memory-bound copy, a
        # read of the page cache or a decode, all of which release the GIL (the reader's
        # sessions are thread-safe; this thread's session keeps the file open meanwhile)
        pairs = layout.pairs
        threads = batch_threads() if len(pairs) > 1 else 1
        elsewhere = pairs[1:] if threads > 1 else []
        running = [thread_pool(threads).submit(gather_pair, entry) for entry in elsewhere]
        try:
            for pack, members in layout.packs:
                raw.update(pack.gather_columns(plan, members))
            for key in layout.singles:
                raw[key] = layout.arrays[key].gather_windows(plan)
            for entry in pairs[: len(pairs) - len(elsewhere)]:
                gather_pair(entry)
        finally:  # never leave a thread reading after this batch's session ends
            failures = [future.exception() for future in running]
        for failure in failures:
            if failure is not None:
                raise failure
        return raw

    @guarded_method  # h5py errors on a damaged file become one LayoutError
    def get_batch(self, indices) -> dict:
        """The collated batch of samples `indices` as a dict of numpy arrays ([B, T, ...])."""
        return self._get_batch(indices)

    def _get_batch(self, indices, shared: dict | None = None) -> dict:
        """The collated batch; its big arrays in shared memory, registered in `shared`, when
        that is a registry (DataLoader workers: see `alloc.py`)."""
        ids = self._index.check_indices(indices)
        plan = BatchPlan(self._index.windows(ids), shared)
        win = plan.win
        out: dict = {}
        reading = self._reader.session() if self._layout.reads_file else contextlib.nullcontext()
        with reading:
            raw = self._gather(plan)
            for key in self._sample_keys:
                x = raw[key]
                out[key] = x if x.dtype == np.float32 else x.astype(np.float32)
            if self.get_pad_mask:
                out["pad_mask"] = win.valid[..., None]
            for group in ("obs", "next_obs") if self.load_next_obs else ("obs",):
                out[group] = self._obs_group(group, raw, plan)
            if self.goal_mode == "last":
                goal = {}
                for key in self.obs_keys:
                    x = self._layout.arrays[f"next_obs/{key}"].gather_frames(
                        win.goal, win.demo, win.goal_step, plan
                    )
                    goal[key] = self._finish_obs(key, x, plan)
                if self.get_pad_mask:
                    goal["pad_mask"] = np.ones((win.size, 1), dtype=bool)
                out["goal_obs"] = goal
        if self.action_keys:
            out["actions"] = self._actions(out)
        out["index"] = ids
        return out

    @guarded_method  # h5py errors on a damaged file become one LayoutError
    def __getitem__(self, index) -> dict:
        """One sample (robomimic's structure); a list or array of indices gives `get_batch`."""
        if np.ndim(index) > 0:
            return self.get_batch(np.asarray(index))
        return sample_of(self.get_batch([int(index)]), 0)

    @guarded_method  # h5py errors on a damaged file become one LayoutError
    def __getitems__(self, indices) -> SampleBatch:
        """Gather a whole batch at once (torch's DataLoader calls this with a batch of indices).

        In a DataLoader worker, big arrays are built in shared memory, so the batch travels
        to the main process without another copy (either collate path: see `batch.py`).
        """
        shared = {} if torch.utils.data.get_worker_info() is not None else None
        data = self._get_batch(indices, shared)
        return SampleBatch(data, len(data["index"]), shared)

    # ------------------------------------------------------------------ follow mode
    @guarded_method  # h5py errors on a damaged file become one LayoutError
    def refresh(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Pick up demos appended to the file since the last look; returns how many were added.

        New demos (of the filter key when one is set, up to demo_limit) are appended after
        the current ones; demos are never removed. Normalisation statistics are kept as they
        are. DataLoader workers started before the refresh keep the old demos until they are
        started again (each epoch, unless persistent_workers=True).
        """
        self._reader.close()  # a handle kept open would not see the new demos
        self._reader.check_identity()
        with self._reader.session():
            df = self._reader.demofile()
            known = set(self.demos)
            demos = [d for d in df.demos_for(self.filter_key) if d not in known]
            if self.demo_limit is not None:
                demos = demos[: max(self.demo_limit - len(self.demos), 0)]
            if not demos:
                return 0
            finish = self._add_demos(df, demos, progress)
        finish()
        del finish, df
        if not self.swmr:
            self._reader.close()
        release_free_heap()
        return len(demos)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close file handles (cached arrays are freed when the dataset is garbage-collected)."""
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __enter__(self) -> SequenceDataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
