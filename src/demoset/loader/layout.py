"""Where each array of a SequenceDataset lives, decided once when the dataset is made.

`plan_layout` takes the per-step shape and dtype of every array the samples read (`Specs`)
and the cache mode, and returns an `ArrayLayout`: for each key the array kind a batch
reads it from (`arrays.py`), the storage objects loading fills (each once: a pack or a
pair serves several keys), and how a batch groups its gathers:

- cached keys with scalar or vector steps share one `RamPack` (one take per batch, when
  there are two or more of them);
- an image key whose obs and next_obs are both cached is one `ShiftedPair` (held once
  while next_obs is obs one step on); both read from the file, a `FilePair` (read once);
  both held as compressed chunks (`chunk_keys`, cache "all" with `cache_compressed`), one
  `ChunkPair` (next_obs held once, obs decoded once per batch: `chunk_pair.py`);
- every other key is gathered on its own.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from demoset.loader.arrays import ArrayKind, FileArray, RamArray, Storage, ZeroArray
from demoset.loader.chunk_pair import ChunkPair, KnownRulePair
from demoset.loader.file_pair import FilePair
from demoset.loader.pack import RamPack, packable
from demoset.loader.ram_chunks import RamChunks
from demoset.loader.reader import DemoReader
from demoset.loader.shifted import ShiftedPair

Specs = dict[str, "tuple[tuple[int, ...], np.dtype] | None"]
"""key ("obs/agentview_image", "actions", ...) -> (per-step shape, stored dtype), or None for
a dataset key no demo has."""


def is_image_like(frame_shape: tuple[int, ...]) -> bool:
    """Per-step shape (H, W, C): camera images and depth maps (robomimic's rgb / depth)."""
    return len(frame_shape) == 3


def is_cached(key: str, spec, cache_mode: str | None) -> bool:
    """Whether cache mode `cache_mode` holds array `key` in RAM ("low_dim": all but images)."""
    if spec is None or cache_mode == "all":
        return True
    if cache_mode is None:
        return False
    is_obs = key.startswith("obs/") or key.startswith("next_obs/")
    return not (is_obs and is_image_like(spec[0]))


@dataclass
class ArrayLayout:
    """Where each array lives and how a batch gathers them (see the module docstring)."""

    arrays: dict[str, ArrayKind]
    """Every key a sample reads -> what it is read from (a pack's or pair's view included)."""
    storage: list[Storage]
    """What loading fills, each array once (a pack or pair, not its views)."""
    packs: list[tuple[RamPack, list[str]]]
    """Each pack with the batch keys one take of it gives."""
    pairs: list[tuple[ShiftedPair | FilePair, str, str]]
    """(pair, obs key, next_obs key) of the image keys read as one block."""
    chunk_keys: frozenset[str]
    """Keys held as compressed chunks (`RamChunks`, `ChunkPair`)."""
    singles: list[str]
    """Batch keys gathered on their own (in neither a pack nor a pair)."""
    reads_file: bool
    """Some batch key is read from the file (a batch then runs in a reader session)."""

    @property
    def cached_bytes(self) -> int:
        """Bytes of arrays held in RAM (shared memory)."""
        return int(sum(s.nbytes for s in self.storage))

    @property
    def chunk_storage(self) -> list[RamChunks | ChunkPair]:
        """What holds compressed chunks (its RAM is counted from the file: `measure`)."""
        return [s for s in self.storage if isinstance(s, (RamChunks, ChunkPair))]


def plan_layout(
    specs: Specs,
    obs_keys: tuple[str, ...],
    sample_keys: tuple[str, ...],
    load_next_obs: bool,
    cache_mode: str | None,
    reader: DemoReader,
    chunk_keys: Collection[str] = (),
) -> ArrayLayout:
    """Decide the array of every key (nothing is read yet: loading fills `storage`).

    `chunk_keys`: cached image keys held as their compressed chunks (`RamChunks`)."""
    groups = ("obs", "next_obs") if load_next_obs else ("obs",)
    batch_keys = sample_keys + tuple(f"{g}/{k}" for g in groups for k in obs_keys)

    def cached(key: str) -> bool:
        return is_cached(key, specs[key], cache_mode)

    def pairable(key: str) -> bool:
        """obs and next_obs of `key` are frames (not vectors) of one shape and dtype, both
        cached or both read from the file: they may share memory."""
        obs_key, next_key = f"obs/{key}", f"next_obs/{key}"
        spec = specs[obs_key]
        return (
            load_next_obs
            and not packable(spec[0])
            and specs[next_key] == spec
            and cached(obs_key) == cached(next_key)
            and (obs_key in chunk_keys) == (next_key in chunk_keys)
        )

    arrays: dict[str, ArrayKind] = {}
    storage: list[Storage] = []
    pairs: list[tuple[ShiftedPair | FilePair, str, str]] = []
    paired = [key for key in obs_keys if pairable(key)]
    for key in paired:
        obs_key, next_key = f"obs/{key}", f"next_obs/{key}"
        if obs_key in chunk_keys:  # compressed in RAM, next_obs held once
            chunks = ChunkPair(key, *specs[obs_key], reader.path)
            arrays[obs_key], arrays[next_key] = chunks.obs, chunks.next_side
            storage.append(chunks)
            pairs.append((KnownRulePair(chunks), obs_key, next_key))
        elif cached(obs_key):  # held once while next_obs is obs one step on
            shape, dtype = specs[obs_key]
            pair = ShiftedPair(key, shape, dtype)
            arrays[obs_key], arrays[next_key] = pair.side("obs"), pair.side("next_obs")
            storage.append(pair)
            pairs.append((pair, obs_key, next_key))
    packed: dict = {}  # cached keys with scalar or vector steps: one pack for all
    for key, spec in specs.items():
        if key in arrays:
            continue
        if spec is None:
            arrays[key] = ZeroArray()
        elif key in chunk_keys:
            arrays[key] = RamChunks(key, *spec, reader.path)
        elif cached(key):
            shape, stored = spec
            # dataset keys are served as float32 (robomimic's cache does the same)
            dtype = np.dtype(np.float32) if key in sample_keys else stored
            if packable(shape):
                packed[key] = (shape, stored, dtype)
                continue
            arrays[key] = RamArray(key, shape, dtype, stored)
        else:
            arrays[key] = FileArray(key, *spec, reader)
        storage.append(arrays[key])
    packs: list[tuple[RamPack, list[str]]] = []
    if len(packed) == 1:
        [(key, (shape, stored, dtype))] = packed.items()
        arrays[key] = RamArray(key, shape, dtype, stored)
        storage.append(arrays[key])
    elif packed:
        pack = RamPack(packed)
        storage.append(pack)
        for key in packed:
            arrays[key] = pack.column(key)
        packs.append((pack, [k for k in pack.members if k in batch_keys]))
    for key in paired:
        obs_key, next_key = f"obs/{key}", f"next_obs/{key}"
        obs, nxt = arrays[obs_key], arrays[next_key]
        if isinstance(obs, FileArray):  # read once where next_obs is obs one step on
            pairs.append((FilePair(obs, nxt), obs_key, next_key))
    in_groups = {k for _, members in packs for k in members}
    in_groups |= {k for _, obs_key, next_key in pairs for k in (obs_key, next_key)}
    return ArrayLayout(
        arrays=arrays,
        storage=storage,
        packs=packs,
        pairs=pairs,
        chunk_keys=frozenset(chunk_keys),
        singles=[k for k in batch_keys if k not in in_groups],
        reads_file=any(isinstance(arrays[k], FileArray) for k in batch_keys),
    )


def bytes_per_frame(
    specs: Specs, sample_keys: tuple[str, ...], which: str, skip: Collection[str] = ()
) -> int:
    """Bytes one frame of every demo costs in RAM under cache mode `which` ("all", "low_dim"),
    leaving out the keys `skip` (held as compressed chunks: counted from the file)."""
    total = 0
    for key, spec in specs.items():
        if spec is None or key in skip:
            continue
        shape, dtype = spec
        if key in sample_keys:
            dtype = np.dtype(np.float32)
        image = (key.startswith("obs/") or key.startswith("next_obs/")) and is_image_like(shape)
        if which == "all" or (which == "low_dim" and not image):
            total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return total
