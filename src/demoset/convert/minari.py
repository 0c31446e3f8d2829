"""Minari datasets in and out: the front of `minari_import` and `minari_export`.

Import (`convert_minari`) turns a Minari dataset (HDF5 storage) into a robomimic-layout
file, one demo per episode; export (`export_minari`) writes a robomimic file as a Minari
dataset that `minari.load_dataset` reads and that imports back to every value of the
original. Minari's own files are described in `minari_layout`.
"""

from demoset.convert.minari_export import MinariExportResult, box_space, export_minari
from demoset.convert.minari_import import MinariImportResult, convert_minari
from demoset.convert.minari_layout import (
    MAIN_FILE,
    METADATA_FILE,
    find_minari_data,
    is_dataset_id,
    is_image_space,
    minari_root,
)

__all__ = [
    "MAIN_FILE",
    "METADATA_FILE",
    "MinariExportResult",
    "MinariImportResult",
    "box_space",
    "convert_minari",
    "export_minari",
    "find_minari_data",
    "is_dataset_id",
    "is_image_space",
    "minari_root",
]
