"""MetaDataset: several SequenceDatasets as one, with sampling weights.

Indices run through the datasets one after the other (dataset 0's samples first), so any
torch sampler works on it, `DistributedSampler` included. Action normalisation is shared:
the moments of every dataset's action keys are merged and the resulting statistics set on
each dataset (robomimic's rule), so "actions" means the same thing whichever file a sample
came from. Observation statistics stay per dataset.

`weights[i]` is the share of samples drawn from dataset i by `sampler()` (robomimic's
`normalize_weights_by_ds_size=True`); None means every sample equally likely.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.utils.data

from demoset.errors import ConfigError
from demoset.loader import stats as S
from demoset.loader.alloc import batch_array
from demoset.loader.batch import SampleBatch, sample_of
from demoset.loader.sequence import SequenceDataset

_SAME = (
    "obs_keys",
    "_sample_keys",
    "action_keys",
    "frame_stack",
    "seq_length",
    "get_pad_mask",
    "goal_mode",
    "load_next_obs",
    "image_format",
    "normalize_obs",
)


class MetaDataset(torch.utils.data.Dataset):
    """Concatenation of SequenceDatasets giving samples of one structure, with dataset weights."""

    def __init__(self, datasets: Sequence[SequenceDataset], weights: Sequence[float] | None = None):
        super().__init__()
        self.datasets = list(datasets)
        if not self.datasets:
            raise ConfigError("MetaDataset needs at least one dataset")
        first = self.datasets[0]
        for ds in self.datasets[1:]:
            for attr in _SAME:
                if getattr(ds, attr) != getattr(first, attr):
                    raise ConfigError(
                        f"datasets differ in {attr.lstrip('_')}: {getattr(first, attr)!r} vs {getattr(ds, attr)!r}",
                        ds.path,
                    )
            for key, spec in first._specs.items():
                other = ds._specs.get(key)
                if (spec is None) != (other is None) or (spec is not None and spec[0] != other[0]):
                    raise ConfigError(f"datasets differ in the shape of {key!r}", ds.path)
        if weights is None:
            self.weights = np.array([len(ds) for ds in self.datasets], dtype=np.float64)
        else:
            self.weights = np.asarray(weights, dtype=np.float64).reshape(-1)
            if len(self.weights) != len(self.datasets):
                raise ConfigError(f"{len(self.weights)} weights for {len(self.datasets)} datasets")
            if (
                np.any(self.weights < 0)
                or not np.isfinite(self.weights).all()
                or self.weights.sum() <= 0
            ):
                raise ConfigError("weights must be finite, non-negative and not all zero")
        self._update_bins()
        self.action_normalization_stats = None
        if any(m is not None for m in first._action_methods.values()):
            self.action_normalization_stats = S.action_normalization_stats(
                self.action_moments(), first._action_methods
            )
            for ds in self.datasets:
                ds.set_action_normalization_stats(self.action_normalization_stats)

    def _update_bins(self) -> None:
        self._bins = np.zeros(len(self.datasets) + 1, dtype=np.int64)
        np.cumsum([len(ds) for ds in self.datasets], out=self._bins[1:])

    def action_moments(self) -> dict[str, S.Moments]:
        merged = self.datasets[0].action_moments()
        for ds in self.datasets[1:]:
            other = ds.action_moments()
            merged = {k: merged[k].merge(other[k]) for k in merged}
        return merged

    def get_action_normalization_stats(self) -> dict:
        return self.datasets[0].get_action_normalization_stats()

    def __len__(self) -> int:
        return int(self._bins[-1])

    def locate(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(dataset number, index within it) of global sample indices."""
        ids = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if ids.size and (ids.min() < -n or ids.max() >= n):
            raise IndexError(f"sample index out of range for a dataset of {n} samples")
        ids = np.where(ids < 0, ids + n, ids)
        which = np.searchsorted(self._bins, ids, side="right") - 1
        return which, ids - self._bins[which]

    def get_batch(self, indices) -> dict:
        """Collated batch (numpy) of global indices; "index" holds the global indices."""
        return self._get_batch(indices)

    def _get_batch(self, indices, shared: dict | None = None) -> dict:
        """The collated batch; big arrays in shared memory, registered in `shared`, when
        that is a registry (DataLoader workers: see `alloc.py`)."""
        ids = np.asarray(indices, dtype=np.int64).reshape(-1)
        which, local = self.locate(ids)
        parts = []
        for d in np.unique(which):
            rows = np.flatnonzero(which == d)
            parts.append((rows, self.datasets[int(d)]._get_batch(local[rows], shared)))
        if len(parts) == 1:
            out = parts[0][1]
        else:
            out = _scatter(parts, len(ids), shared)
        out["index"] = np.where(ids < 0, ids + len(self), ids)
        return out

    def __getitem__(self, index):
        if np.ndim(index) > 0:
            return self.get_batch(np.asarray(index))
        return sample_of(self.get_batch([int(index)]), 0)

    def __getitems__(self, indices) -> SampleBatch:
        shared = {} if torch.utils.data.get_worker_info() is not None else None
        data = self._get_batch(indices, shared)
        return SampleBatch(data, len(data["index"]), shared)

    def refresh(self) -> int:
        """refresh() every dataset; returns the number of demos added in all."""
        added = sum(ds.refresh() for ds in self.datasets)
        self._update_bins()
        return added

    def sample_weights(self) -> np.ndarray:
        """Per-sample probability under the dataset weights (sums to 1)."""
        lengths = np.diff(self._bins).astype(np.float64)
        per_sample = np.divide(
            self.weights, lengths, out=np.zeros_like(self.weights), where=lengths > 0
        )
        w = np.repeat(per_sample, np.diff(self._bins))
        return w / w.sum()

    def sampler(
        self,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> WeightedSampler:
        """A sampler drawing samples by dataset weight (with replacement); see WeightedSampler."""
        return WeightedSampler(
            self, num_samples=num_samples, seed=seed, num_replicas=num_replicas, rank=rank
        )

    def get_dataset_sampler(self) -> WeightedSampler:
        """robomimic's name: a weighted sampler of len(self) samples."""
        return self.sampler()

    def close(self) -> None:
        for ds in self.datasets:
            ds.close()

    def __repr__(self) -> str:
        return f"MetaDataset({len(self.datasets)} datasets, {len(self)} samples, weights={self.weights.tolist()})"


def _scatter(parts, size: int, shared: dict | None) -> dict:
    """Merge per-dataset batches back into the original order."""
    rows0, first = parts[0]

    def build(template, getter):
        if isinstance(template, dict):
            return {k: build(v, lambda b, k=k, g=getter: g(b)[k]) for k, v in template.items()}
        out = batch_array(
            (size, *template.shape[1:]), np.result_type(*(getter(b) for _, b in parts)), shared
        )
        for rows, batch in parts:
            out[rows] = getter(batch)
        return out

    return build(first, lambda b: b)


class WeightedSampler(torch.utils.data.Sampler):
    """Draws `num_samples` indices of a MetaDataset: a dataset by weight, then a sample uniformly.

    Deterministic for a given seed and epoch (`set_epoch`, like DistributedSampler). With
    num_replicas > 1 every rank draws the same global stream and keeps every
    num_replicas-th index starting at its rank, so ranks get different samples.
    """

    def __init__(
        self,
        meta: MetaDataset,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} is not in [0, {num_replicas})")
        self.meta = meta
        self.total = int(num_samples if num_samples is not None else len(meta))
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.total, self.num_replicas))

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        bins = self.meta._bins
        lengths = np.diff(bins)
        weights = np.where(lengths > 0, self.meta.weights, 0.0)
        which = rng.choice(len(lengths), size=self.total, p=weights / weights.sum())
        local = np.floor(rng.random(self.total) * lengths[which]).astype(np.int64)
        return (bins[which] + local)[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())
