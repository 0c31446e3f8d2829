"""Turn the old stack's outputs into the small fixtures committed under tests/fixtures/oldsuite.

Runs inside the old-stack virtualenv (only h5py and numpy are needed). Two jobs:

- `reference`: copy robomimic 0.3.0's extracted file without next_obs camera frames (they
  repeat obs shifted by one step; the low-dim next_obs stay) and with gzip on every dataset,
  so the fixture stays near a megabyte. Values are copied bit for bit.
- `layout13`: rewrite a raw robosuite 1.4.1 demo.hdf5 in the layout robosuite 1.0-1.3's
  collection script wrote: a folder with demo.hdf5 whose groups are named demo1, demo2, ...
  and whose model_file attributes name files in models/ beside it (model_1.xml, ...).

    python compact_fixture.py reference IN.hdf5 OUT.hdf5
    python compact_fixture.py layout13 RAW.hdf5 OUT_DIR
"""

import os
import re
import sys

import h5py


def _copy_attrs(src, dst):
    for key, value in src.attrs.items():
        dst.attrs[key] = value


def reference(src_path, out_path):
    with h5py.File(src_path, "r") as src, h5py.File(out_path, "w") as out:

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                _copy_attrs(obj, out.require_group(name))
                return
            parts = name.split("/")
            if "next_obs" in parts and parts[-1].endswith(("_image", "_depth")):
                return
            dset = out.create_dataset(
                name, data=obj[()], compression="gzip", compression_opts=9, shuffle=True
            )
            _copy_attrs(obj, dset)

        _copy_attrs(src, out)
        src.visititems(visit)


def layout13(raw_path, out_dir):
    os.makedirs(os.path.join(out_dir, "models"), exist_ok=True)
    with h5py.File(raw_path, "r") as src, h5py.File(os.path.join(out_dir, "demo.hdf5"), "w") as out:
        data = out.create_group("data")
        _copy_attrs(src["data"], data)
        names = sorted(src["data"], key=lambda n: int(re.sub(r"\D", "", n)))
        for i, name in enumerate(names, start=1):
            group = data.create_group(f"demo{i}")
            xml_name = f"model_{i}.xml"
            with open(os.path.join(out_dir, "models", xml_name), "w") as f:
                f.write(src["data"][name].attrs["model_file"])
            group.attrs["model_file"] = xml_name
            for key in ("states", "actions"):
                group.create_dataset(key, data=src["data"][name][key][()])


if __name__ == "__main__":
    job, a, b = sys.argv[1:4]
    {"reference": reference, "layout13": layout13}[job](a, b)
