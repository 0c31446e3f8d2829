"""The fast PyTorch loader: robomimic's SequenceDataset semantics over flat arrays.

- `SequenceDataset`: windows of one file (see its docstring for every argument).
- `MetaDataset`: several datasets as one, with sampling weights and a `WeightedSampler`.
- `collate`: DataLoader collate_fn that turns a gathered batch into tensors without copying.
- `stats`: exact normalisation statistics and their cache beside the dataset.
"""

from demoset.loader.batch import SampleBatch, collate
from demoset.loader.index import WindowIndex
from demoset.loader.meta import MetaDataset, WeightedSampler
from demoset.loader.sequence import SequenceDataset
from demoset.loader.stats import (
    Moments,
    action_normalization_stats,
    compute_moments,
    obs_normalization_stats,
)

__all__ = [
    "MetaDataset",
    "Moments",
    "SampleBatch",
    "SequenceDataset",
    "WeightedSampler",
    "WindowIndex",
    "action_normalization_stats",
    "collate",
    "compute_moments",
    "obs_normalization_stats",
]
