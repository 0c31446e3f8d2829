"""`demoset convert <source> ...`: one sub-command per source format.

Each source registers itself from its own module (`demoset.cli.convert_<source>`), so
converters can be added without touching the others.
"""

from __future__ import annotations

import argparse
import importlib

CONVERTER_MODULES = [
    "demoset.cli.convert_robosuite",
    "demoset.cli.convert_d4rl",
    "demoset.cli.convert_roboturk",
    "demoset.cli.convert_momart",
    "demoset.cli.convert_minari",
    "demoset.cli.convert_lerobot",
    "demoset.cli.convert_zarr",
]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "convert",
        help="convert another dataset layout into the robomimic layout (a new file; the source is untouched)",
        description="Convert a dataset from another layout into the robomimic HDF5 layout.",
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE")
    for name in CONVERTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sources)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
