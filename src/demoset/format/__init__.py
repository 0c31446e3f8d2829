"""The robomimic HDF5 layout: read (`open_dataset`), write (`DatasetWriter`), check (`validate`).

`__all__` below is the format layer's whole public surface: modules outside `format/`
import these names from `demoset.format` and never reach into its submodules
(tests/test_architecture.py checks it). `constants` is the layout's vocabulary (group,
array and attribute names), imported as a module: `from demoset.format import constants as C`.
"""

from demoset.format import constants
from demoset.format.compression import (
    Compression,
    FilterUnavailableError,
    describe_storage,
    filter_ids,
    parse_compression,
    read_failure,
    storage_of,
)
from demoset.format.constants import (
    ENV_TYPE_GYM,
    ENV_TYPE_IG_MOMART,
    ENV_TYPE_ROBOSUITE,
    demo_sort_key,
    sorted_demos,
)
from demoset.format.demofile import ArrayInfo, DemoFile, open_dataset
from demoset.format.env_meta import (
    EnvMeta,
    attr_int,
    attr_text,
    env_meta_from_dict,
    env_meta_from_raw_attrs,
    parse_env_args,
)
from demoset.format.guards import (
    READ_ERRORS,
    describe_error,
    guarded_method,
    h5_errors,
    untrusted_input,
)
from demoset.format.h5io import (
    array_nbytes,
    check_dataset_safe,
    check_dataset_size,
    check_link_safe,
    open_h5,
    read_array,
)
from demoset.format.isolation import beat, run_isolated, waiting
from demoset.format.journal import (
    GuardedFile,
    edit_in_place,
    journal_candidates,
    recover_if_abandoned,
)
from demoset.format.locking import reader_gate
from demoset.format.stored_stats import (
    STATS_GROUP,
    group_stats,
    read_stats,
    stats_keys,
    stats_of_arrays,
    stats_summary,
    store_stats,
    write_demo_stats,
)
from demoset.format.validate import Finding, preflight, validate
from demoset.format.writer import DatasetWriter, derive_next_obs

__all__ = [
    "ArrayInfo",
    "Compression",
    "DatasetWriter",
    "DemoFile",
    "ENV_TYPE_GYM",
    "ENV_TYPE_IG_MOMART",
    "ENV_TYPE_ROBOSUITE",
    "EnvMeta",
    "FilterUnavailableError",
    "Finding",
    "GuardedFile",
    "READ_ERRORS",
    "STATS_GROUP",
    "array_nbytes",
    "attr_int",
    "attr_text",
    "beat",
    "check_dataset_safe",
    "check_dataset_size",
    "check_link_safe",
    "constants",
    "demo_sort_key",
    "derive_next_obs",
    "describe_error",
    "describe_storage",
    "edit_in_place",
    "journal_candidates",
    "recover_if_abandoned",
    "env_meta_from_dict",
    "env_meta_from_raw_attrs",
    "filter_ids",
    "group_stats",
    "guarded_method",
    "h5_errors",
    "open_dataset",
    "open_h5",
    "parse_compression",
    "parse_env_args",
    "preflight",
    "read_array",
    "read_failure",
    "read_stats",
    "reader_gate",
    "run_isolated",
    "sorted_demos",
    "stats_keys",
    "stats_of_arrays",
    "stats_summary",
    "storage_of",
    "store_stats",
    "untrusted_input",
    "validate",
    "waiting",
    "write_demo_stats",
]
