"""robomimic's MetaDataset arguments and sampler, over demoset's MetaDataset.

robomimic's later releases combine several files in a MetaDataset built as
`MetaDataset(datasets, ds_weights, normalize_weights_by_ds_size)` and train with the
sampler its `get_dataset_sampler()` returns, which draws new indices each epoch without
anyone calling `set_epoch`. `RobomimicMetaDataset` takes those arguments and hands out
such a sampler; `demoset.robomimic.install()` puts it where robomimic's dataset factory
looks for its MetaDataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from demoset.errors import ConfigError
from demoset.loader.meta import MetaDataset, WeightedSampler


class FreshWeightedSampler(WeightedSampler):
    """A WeightedSampler that draws new indices on every pass, as robomimic's sampler does.

    robomimic's train.py never calls `set_epoch`; this sampler advances its epoch itself
    at each `iter()`. The seed comes from numpy's global generator when the sampler is
    made, so train.py's `np.random.seed(config.train.seed)` makes runs repeatable.
    """

    def __init__(self, meta: MetaDataset, num_samples: int | None = None):
        super().__init__(meta, num_samples=num_samples, seed=int(np.random.randint(2**31 - 1)))
        self.epoch = -1

    def __iter__(self) -> Iterator[int]:
        self.epoch += 1
        return super().__iter__()


class RobomimicMetaDataset(MetaDataset):
    """demoset's MetaDataset built with robomimic's MetaDataset arguments.

    robomimic gives each sample of dataset i the weight `ds_weights[i]` (divided by the
    dataset's size when `normalize_weights_by_ds_size`); demoset's weights are the share of
    samples drawn from each dataset, so they become `ds_weights[i]` and
    `ds_weights[i] * len(dataset i)` respectively. Unlike robomimic's, it accepts datasets
    cached with "all" (demoset normalises actions when a batch is made, not when caching).
    """

    def __init__(
        self,
        datasets: Sequence,
        ds_weights: Sequence[float],
        normalize_weights_by_ds_size: bool = False,
        **kwargs: Any,
    ):
        if kwargs:
            raise ConfigError(f"MetaDataset got an unknown argument {next(iter(kwargs))!r}")
        weights = np.asarray(ds_weights, dtype=np.float64).reshape(-1)
        if len(weights) == len(datasets) and not normalize_weights_by_ds_size:
            weights = weights * np.array([len(ds) for ds in datasets], dtype=np.float64)
        super().__init__(datasets, weights)
        self.ds_weights = list(ds_weights)

    def get_dataset_sampler(self) -> FreshWeightedSampler:
        """robomimic's weighted sampler: len(self) draws with replacement, new ones each epoch."""
        return FreshWeightedSampler(self)

    def set_action_normalization_stats(self, stats: Mapping) -> None:
        """robomimic's method: the same action statistics on every dataset."""
        self.action_normalization_stats = stats
        for ds in self.datasets:
            ds.set_action_normalization_stats(stats)

    def __repr__(self) -> str:
        return "\n".join(repr(ds) for ds in self.datasets)
