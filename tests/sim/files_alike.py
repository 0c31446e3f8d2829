"""Compare two HDF5 files array for array and attribute for attribute (and storage filters)."""

from __future__ import annotations

import h5py
import numpy as np


def _attrs(obj) -> dict:
    out = {}
    for key in obj.attrs:
        value = obj.attrs[key]
        out[key] = value.tolist() if hasattr(value, "tolist") else value
    return out


def file_contents(path) -> dict[str, tuple]:
    """Every group's attributes and every dataset's values, dtype, chunks and filter."""
    out: dict[str, tuple] = {}
    with h5py.File(path, "r") as f:
        out["/"] = ("group", _attrs(f))

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj[()], str(obj.dtype), obj.chunks, obj.compression, _attrs(obj))
            else:
                out[name] = ("group", _attrs(obj))

        f.visititems(visit)
    return out


def assert_same_file(a, b) -> None:
    """Fail naming the first HDF5 path whose contents differ between files `a` and `b`."""
    ca, cb = file_contents(a), file_contents(b)
    assert sorted(ca) == sorted(cb), sorted(set(ca) ^ set(cb))
    for name, va in ca.items():
        vb = cb[name]
        if isinstance(va[0], str):
            assert va == vb, name
        else:
            np.testing.assert_array_equal(va[0], vb[0], err_msg=name)
            assert va[1:] == vb[1:], name
