"""Helpers shared by the command modules: dataset arguments, output, progress bars."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tqdm import tqdm


def add_dataset_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """A positional DATASET that robomimic users may also give as --dataset."""
    parser.add_argument("dataset", nargs="?", help="path to the HDF5 dataset")
    parser.add_argument("--dataset", dest="dataset_flag", help=argparse.SUPPRESS)
    parser.set_defaults(_dataset_required=required)


def dataset_path(args: argparse.Namespace) -> str:
    """The dataset path from the positional argument or --dataset."""
    from demoset.errors import DemosetError

    path = getattr(args, "dataset_flag", None) or getattr(args, "dataset", None)
    if not path:
        raise DemosetError("no dataset given (demoset COMMAND DATASET, or --dataset DATASET)")
    return path


def add_filter_key_arg(
    parser: argparse.ArgumentParser, help_text: str = "use only the demos of this filter key"
) -> None:
    parser.add_argument(
        "--filter-key", "--filter_key", dest="filter_key", default=None, help=help_text
    )


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def progress_bar(
    total: int | None, desc: str, unit: str = "it", disable: bool | None = None
) -> tqdm:
    """A tqdm bar on stderr, hidden when stderr is not a terminal unless forced."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(
        total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True
    )


def progress_callback(bar: tqdm):
    """A (done, total) callback for library functions that drives a tqdm bar."""

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update


def is_terminal() -> bool:
    return sys.stdout.isatty()


def add_isolation_arg(parser: argparse.ArgumentParser) -> None:
    """--no-isolation: read in this process instead of a forked child (see `preflight_input`)."""
    parser.add_argument(
        "--no-isolation",
        dest="isolated",
        action="store_false",
        help="read the file in this process, not in a child process; a damaged file that "
        "makes HDF5 loop forever then hangs the command instead of failing after "
        "$DEMOSET_STALL_SECONDS (60 s) without progress",
    )


def preflight_input(args, path: str | None) -> None:
    """Read an input file's metadata in a forked child first (unless --no-isolation).

    A damaged file that makes HDF5 loop forever or crash then ends the command with one
    line (UnsafeFileError, exit 2) instead of hanging it; a file that passes is read
    in-process as usual. A missing path is left to the converter to report.
    """
    import os

    if not path or not getattr(args, "isolated", True) or not os.path.isfile(path):
        return
    from demoset.format import preflight

    preflight(path)


def add_split_output_args(parser: argparse.ArgumentParser) -> None:
    """--out, --valid-ratio, --seed, --image-compression, --overwrite of a converter whose
    source has no train/valid split of its own (one is made by robomimic's rule)."""
    parser.add_argument(
        "--out", "--output", dest="out", required=True, help="the new robomimic-layout file"
    )
    parser.add_argument(
        "--valid-ratio",
        type=float,
        default=0.1,
        help="share of demos in the 'valid' filter key (robomimic's split rule; 0 for none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/valid split")
    parser.add_argument(
        "--image-compression",
        default=None,
        choices=["gzip", "lzf", "lz4", "blosc"],
        help="compress image observations in the output file",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run_with_progress(
    work: Callable[..., Any], desc: str, unit: str, *args: Any, **options: Any
) -> Any:
    """Call `work(*args, progress=..., **options)` under a progress bar and return its result.

    The library functions report (done, total) through a `progress` callback; this is the one
    place the CLI wires such a callback to a tqdm bar on stderr.
    """
    with progress_bar(None, desc, unit=unit) as bar:
        return work(*args, progress=progress_callback(bar), **options)


def options_of(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The parsed options `names` as keyword arguments of a library function.

    For commands whose option names (argparse dests) are the function's parameter names, so
    the command lists the names once instead of spelling `name=args.name` for each.
    """
    return {name: getattr(args, name) for name in names}


def run_split_converter(convert: Callable[..., Any], args: argparse.Namespace) -> Any:
    """Run a converter registered with `add_split_output_args` on `args.input`.

    Such converters take the same output options (split ratio, seed, image compression,
    overwrite), so their commands pass them, and show progress by episode, in one way.
    """
    options = options_of(args, "valid_ratio", "seed", "image_compression", "overwrite")
    return run_with_progress(convert, "converting", "episode", args.input, args.out, **options)


def run_export(export: Callable[..., Any], args: argparse.Namespace, **options: Any) -> Any:
    """Run an `export_*` function from the dataset argument to `--out`, with its own options.

    Every export target takes the dataset, --out, --filter-key and --overwrite the same way
    and shows progress by episode; only the target's own options differ.
    """
    options = {**options_of(args, "filter_key", "overwrite"), **options}
    path = dataset_path(args)
    return run_with_progress(export, "exporting", "episode", path, args.out, **options)


def print_filter_keys(counts: Mapping[str, int]) -> None:
    """Print a converter's filter keys with their sizes, `filter keys: train (9), valid (1)`.

    Prints nothing when there are none, so a converter's summary stays short.
    """
    if counts:
        print("filter keys: " + ", ".join(f"{k} ({n})" for k, n in counts.items()))
