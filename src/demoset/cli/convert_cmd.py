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
    for source_parser in sources.choices.values():
        if "--compression" not in source_parser._option_string_actions:  # minari has its own
            _add_compression(source_parser)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _add_compression(source_parser: argparse.ArgumentParser) -> None:
    """`--compression SPEC` for every converter: images of the new file re-encoded after
    it is written (see `demoset compress`); the converters themselves stay unchanged."""
    from demoset.cli.compress_cmd import add_compression_arg

    add_compression_arg(source_parser)
    convert = source_parser.get_default("func")

    def run_then_compress(args: argparse.Namespace) -> int:
        rc = convert(args)
        if rc or not args.compression:
            return rc
        return recompress_output(args)

    source_parser.set_defaults(func=run_then_compress)


def recompress_output(args: argparse.Namespace) -> int:
    """Rewrite the converter's output with args.compression, replacing it atomically."""
    import os

    from demoset.cli.common import progress_bar, progress_callback
    from demoset.compress import compress_file
    from demoset.errors import DemosetError
    from demoset.fsutil import temp_path_beside

    out = getattr(args, "out", None)
    if not out or not os.path.isfile(out):
        raise DemosetError("--compression needs --out (a new file to write)")
    tmp = temp_path_beside(out, suffix=".compress")
    try:
        with progress_bar(None, "compress", unit="frame") as bar:
            report = compress_file(
                out, tmp, args.compression, overwrite=True, progress=progress_callback(bar)
            )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(
        f"images stored as {report.compression}: {report.before / 1e6:.2f} MB -> {report.after / 1e6:.2f} MB"
    )
    return 0
