"""Data for training: what the dataset holds, demoset SequenceDatasets, batch order.

`describe_dataset` checks the config against the file before anything is built (missing
observation keys or filter keys are one-line errors naming file and HDF5 path).
`EpochBatchSampler` fixes the batch order of every epoch from (seed, epoch), which is what
lets `--resume` continue exactly and lets data-parallel processes split one stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from demoset.errors import ConfigError, FilterKeyError, LayoutError
from demoset.format import open_dataset
from demoset.train.algos import ShapeMeta
from demoset.train.config import TrainConfig


@dataclass
class DatasetFacts:
    """What training needs to know about the file before reading it."""

    path: str
    shape_meta: ShapeMeta
    env_meta: dict | None
    train_filter_key: str | None
    valid_filter_key: str | None
    train_demos: list[str]
    valid_demos: list[str]


def describe_dataset(config: TrainConfig, path: str) -> DatasetFacts:
    """Check the config's observation and filter keys against the dataset file."""
    train_cfg = config["train"]
    validate = bool(config["experiment"]["validate"])
    train_fk = train_cfg["hdf5_filter_key"]
    valid_fk = train_cfg["hdf5_validation_filter_key"]
    if valid_fk is not None and not validate:
        raise ConfigError(
            "config key 'train.hdf5_validation_filter_key' is set but 'experiment.validate' is false"
        )
    with open_dataset(path) as f:
        if not f.demos:
            raise LayoutError("dataset has no demos", path=path, h5path="/data")
        keys = set(f.filter_keys)
        if validate:
            valid_fk = valid_fk or "valid"
            if train_fk is None:
                train_fk = "train"
            for fk, cfg_key in (
                (train_fk, "hdf5_filter_key"),
                (valid_fk, "hdf5_validation_filter_key"),
            ):
                if fk not in keys:
                    raise FilterKeyError(
                        f"filter key {fk!r} not found (needed because experiment.validate is set; "
                        f"make one with `demoset split`, or set train.{cfg_key})",
                        path=path,
                        h5path=f"/mask/{fk}",
                    )
        elif train_fk is not None and train_fk not in keys:
            raise FilterKeyError(
                f"filter key {train_fk!r} not found", path=path, h5path=f"/mask/{train_fk}"
            )
        train_demos = f.demos_for(train_fk)
        valid_demos = f.demos_for(valid_fk) if validate else []
        overlap = sorted(set(train_demos) & set(valid_demos))
        if overlap:
            raise FilterKeyError(
                f"training and validation demos overlap ({overlap[0]} is in both {train_fk!r} and {valid_fk!r})",
                path=path,
                h5path=f"/mask/{valid_fk}",
            )
        if not train_demos:
            raise FilterKeyError(
                f"filter key {train_fk!r} selects no demos", path=path, h5path=f"/mask/{train_fk}"
            )
        demo = train_demos[0]
        available = f.obs_keys(demo)
        modalities = config.obs_modalities("obs")
        goal_modalities = config.obs_modalities("goal")
        obs_shapes: dict[str, list[int]] = {}
        for key in sorted(set(modalities) | set(goal_modalities)):
            if key not in available:
                raise ConfigError(
                    f"observation key {key!r} from the config is not in the dataset "
                    f"(it has {', '.join(sorted(available)) or 'none'})",
                    path=path,
                    h5path=f"/data/{demo}/obs/{key}",
                )
            shape = list(available[key].shape)
            modality = modalities.get(key) or goal_modalities[key]
            if modality in ("rgb", "depth") and len(shape) != 3:
                raise ConfigError(
                    f"observation key {key!r} is listed as {modality} but is not H x W x C (shape {shape})",
                    path=path,
                    h5path=f"/data/{demo}/obs/{key}",
                )
            obs_shapes[key] = shape
        if not f.has(demo, "actions"):
            raise LayoutError("demo has no actions", path=path, h5path=f"/data/{demo}/actions")
        ac_shape = f.array_keys(demo)["actions"].shape
        if len(ac_shape) != 1:
            raise LayoutError(
                f"actions must be (N, A), found per-step shape {list(ac_shape)}",
                path=path,
                h5path=f"/data/{demo}/actions",
            )
        env_meta = f.env_meta.to_dict() if f.env_meta is not None else None
    all_modalities = {**goal_modalities, **modalities}
    shape_meta = ShapeMeta.build(
        obs_shapes={k: obs_shapes[k] for k in modalities},
        ac_dim=int(ac_shape[0]),
        modalities={k: all_modalities[k] for k in obs_shapes},
        goal_shapes={k: obs_shapes[k] for k in goal_modalities},
    )
    return DatasetFacts(
        path=os.path.abspath(path),
        shape_meta=shape_meta,
        env_meta=env_meta,
        train_filter_key=train_fk,
        valid_filter_key=valid_fk if validate else None,
        train_demos=train_demos,
        valid_demos=valid_demos,
    )


def to_jsonable_stats(stats: dict | None) -> dict | None:
    """{key: {"mean", "std"}} with numpy arrays -> nested lists."""
    if stats is None:
        return None
    out = {}
    for key, st in stats.items():
        out[key] = {
            name: np.asarray(v, dtype=np.float64).tolist()
            for name, v in st.items()
            if name in ("mean", "std")
        }
    return out


def make_sequence_dataset(config: TrainConfig, facts: DatasetFacts, filter_key: str | None):
    """demoset's SequenceDataset for one filter key, configured from the train section."""
    from demoset.loader import SequenceDataset

    t = config["train"]
    method = t["action_normalization"]
    return SequenceDataset(
        facts.path,
        obs_keys=tuple(config.all_obs_keys),
        dataset_keys=("actions",),
        action_keys=("actions",),
        action_config={"actions": {"normalization": method}} if method else None,
        frame_stack=t["frame_stack"],
        seq_length=t["seq_length"],
        pad_frame_stack=t["pad_frame_stack"],
        pad_seq_length=t["pad_seq_length"],
        get_pad_mask=False,
        goal_mode=t["goal_mode"],
        cache_mode=t["hdf5_cache_mode"],
        swmr=t["hdf5_use_swmr"],
        normalize_obs=False,  # the policy normalises with the training set's statistics
        filter_key=filter_key,
        load_next_obs=t["goal_mode"] == "last",  # goals are taken from next_obs
        image_format="hwc_uint8",
    )


def action_normalization_stats(dataset, config: TrainConfig) -> dict | None:
    """{"scale", "offset"} of the actions (normalised = (raw - offset) / scale), as lists.

    The SequenceDataset normalises the actions it serves; the policy needs the statistics
    only to turn its outputs back into environment actions.
    """
    if not config["train"]["action_normalization"]:
        return None
    st = dataset.get_action_normalization_stats()["actions"]
    return {
        k: np.asarray(st[k], dtype=np.float64).reshape(-1).tolist() for k in ("scale", "offset")
    }


def share_action_stats(dataset, stats: dict | None) -> None:
    """Make `dataset` normalise actions with given statistics (the training set's)."""
    if stats is None:
        return
    dataset.set_action_normalization_stats(
        {"actions": {k: np.asarray(stats[k], dtype=np.float32)[None] for k in ("scale", "offset")}}
    )


def obs_normalization_stats(dataset, config: TrainConfig) -> dict | None:
    """Mean/std of the low-dim observation keys, from the SequenceDataset's statistics."""
    if not config["train"]["hdf5_normalize_obs"]:
        return None
    stats = dataset.get_obs_normalization_stats()
    low_dim = {
        k
        for k, m in {**config.obs_modalities("goal"), **config.obs_modalities("obs")}.items()
        if m == "low_dim"
    }
    return to_jsonable_stats({k: v for k, v in stats.items() if k in low_dim})


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of indices for one epoch, decided by (seed, epoch) alone.

    An epoch is `num_batches` batches (robomimic's epoch_every_n_steps) or, when None, one
    pass over the data without the last partial batch. Shuffled passes are concatenated
    when an epoch is longer than the data. With several processes, each takes every
    `world_size`-th batch of one shared stream, so the processes see disjoint data.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        num_batches: int | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        if num_items <= 0:
            raise ConfigError("the dataset has no samples to train on")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        if num_batches is None:
            num_batches = max(1, num_items // (batch_size * world_size))
        self.num_batches = num_batches
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        need = self.num_batches * self.batch_size * self.world_size
        chunks = []
        have = 0
        while have < need:
            perm = (
                torch.randperm(self.num_items, generator=g)
                if self.shuffle
                else torch.arange(self.num_items)
            )
            chunks.append(perm)
            have += self.num_items
        stream = torch.cat(chunks)[:need].view(self.num_batches * self.world_size, self.batch_size)
        for b in range(self.rank, stream.shape[0], self.world_size):
            yield stream[b].tolist()


def make_loader(
    dataset, sampler: EpochBatchSampler, num_workers: int, seed: int
) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` that takes whole batches from `sampler`.

    Worker seeds come from a private generator, so creating iterators never draws from
    the global torch RNG (whose state a checkpoint restores).
    """
    from demoset.loader import collate

    gen = torch.Generator()
    gen.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=gen,
        collate_fn=collate,
    )
