"""demoset: robot-learning demonstration datasets in the robomimic HDF5 layout.

The format layer (`demoset.format`) and filter keys (`demoset.masks`) need only h5py and
numpy. The PyTorch loader is imported lazily so that `import demoset` stays fast:
`demoset.SequenceDataset` and `demoset.MetaDataset` load torch on first use.
"""

from __future__ import annotations

from demoset.errors import DemosetError
from demoset.format import DatasetWriter, DemoFile, open_dataset, validate

__version__ = "0.1.0"

__all__ = [
    "DatasetWriter",
    "DemoFile",
    "DemosetError",
    "MetaDataset",
    "SequenceDataset",
    "open_dataset",
    "validate",
]


def __getattr__(name: str):
    if name in ("SequenceDataset", "MetaDataset"):
        from demoset import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'demoset' has no attribute {name!r}")
