"""robosuite 1.0-1.3's raw layout: a folder with demo.hdf5 and the model XMLs in models/.

robosuite 1.0-1.3's collection script stored each demo's model as a file `models/model_N.xml`
beside `demo.hdf5` and put only the file name in the demo's `model_file` attribute; the
earliest files also name their demo groups `demo1`, `demo2`, ... instead of `demo_1`.
These helpers let the raw converter read either layout: the folder or its demo.hdf5 is
accepted, the XML text is read from models/ (file names only; nothing outside that folder
is opened), and demo names come out in the robomimic form (`demo_N`) that robomimic's own
code parses.
"""

from __future__ import annotations

import os
import re

from demoset.errors import ConversionError

RAW_FILE_NAME = "demo.hdf5"
MODELS_FOLDER = "models"
MAX_MODEL_BYTES = 64 * 1024 * 1024
_EARLY_NAME = re.compile(r"^demo(\d+)$")


def raw_file(path: str | os.PathLike) -> str:
    """The raw HDF5 file: `path` itself, or `path`/demo.hdf5 for a robosuite 1.0-1.3 folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        inner = os.path.join(path, RAW_FILE_NAME)
        if not os.path.isfile(inner):
            raise ConversionError(f"the folder has no {RAW_FILE_NAME}", path)
        return inner
    return path


def is_model_text(value: str) -> bool:
    """Whether a model_file attribute holds the XML itself (robosuite 1.4+) or a file name."""
    return value.lstrip().startswith("<")


def model_xml(value: str, raw_path: str, h5path: str) -> str:
    """The model XML of a demo: the attribute text, or the named file in models/ beside it."""
    if is_model_text(value):
        return value
    name = value.strip()
    if not name or os.path.basename(name) != name or name in (".", ".."):
        raise ConversionError(
            f"model_file {value!r} is neither model XML nor a file name in {MODELS_FOLDER}/",
            raw_path,
            h5path,
        )
    models = os.path.join(os.path.dirname(os.path.abspath(raw_path)), MODELS_FOLDER)
    xml_path = os.path.join(models, name)
    if not os.path.isfile(xml_path):
        raise ConversionError(
            f"model_file names {name}, which is not in {models} (robosuite 1.0-1.3 files keep "
            "their model XMLs in models/ beside demo.hdf5)",
            raw_path,
            h5path,
        )
    if os.path.getsize(xml_path) > MAX_MODEL_BYTES:
        raise ConversionError(
            f"{xml_path} is larger than {MAX_MODEL_BYTES} bytes", raw_path, h5path
        )
    try:
        with open(xml_path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read {xml_path}: {exc}", raw_path, h5path) from None


def robomimic_demo_name(name: str) -> str:
    """`demo1` -> `demo_1` (robosuite 1.0's names); any other name is kept."""
    match = _EARLY_NAME.match(name)
    return f"demo_{int(match.group(1))}" if match else name
