"""Entry point of the `demoset` command.

Each command group lives in its own module with a `register(subparsers)` function that
adds its sub-commands and sets `func` on them. This module only wires them together and
turns library errors into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from demoset import __version__
from demoset.errors import DemosetError

# Command modules, in the order their commands appear in `demoset --help`.
COMMAND_MODULES = [
    "demoset.cli.inspect_cmd",
    "demoset.cli.masks_cmd",
    "demoset.cli.edit_cmd",
    "demoset.cli.curate_cmd",
    "demoset.cli.stats_cmd",
    "demoset.cli.doctor_cmd",
    "demoset.cli.compress_cmd",
    "demoset.cli.convert_cmd",
    "demoset.cli.sim_cmd",
    "demoset.cli.viz_cmd",
    "demoset.cli.reliability_cmd",
    "demoset.cli.train_cmd",
    "demoset.cli.robomimic_cmd",
    "demoset.cli.download_cmd",
    "demoset.cli.export_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demoset",
        description="Robot-learning demonstration datasets in the robomimic HDF5 layout.",
    )
    parser.add_argument("--version", action="version", version=f"demoset {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command group not written yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except DemosetError as exc:
        print(f"demoset {args.command}: error: {exc.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"demoset {args.command}: interrupted; nothing half-written was left under an output name",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
