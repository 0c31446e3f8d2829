"""The robomimic HDF5 layout: read (`open_dataset`), write (`DatasetWriter`), check (`validate`)."""

from demoset.format.constants import sorted_demos
from demoset.format.demofile import ArrayInfo, DemoFile, open_dataset
from demoset.format.env_meta import EnvMeta, env_meta_from_dict, parse_env_args
from demoset.format.isolation import preflight, run_isolated
from demoset.format.validate import Finding, validate
from demoset.format.writer import DatasetWriter, derive_next_obs

__all__ = [
    "ArrayInfo",
    "DatasetWriter",
    "DemoFile",
    "EnvMeta",
    "Finding",
    "derive_next_obs",
    "env_meta_from_dict",
    "open_dataset",
    "parse_env_args",
    "preflight",
    "run_isolated",
    "sorted_demos",
    "validate",
]
