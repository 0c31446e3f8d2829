"""`demoset compress`: rewrite a dataset with another lossless image storage."""

from __future__ import annotations

import argparse

from demoset.cli.common import add_dataset_arg, dataset_path, progress_bar, progress_callback

COMPRESSION_HELP = (
    "image storage CODEC[:LEVEL[:FRAMES]]: zstd (= zstd:9:16, the measured default), lz4hc "
    "(= lz4hc:9:16: files ~25%% bigger, decoded 2-3x faster), blosc2 (= blosc2-zstd:5:16), "
    "blosc2-lz4, blosc2-lz4hc, gzip, lzf, lz4, blosc, none; FRAMES is "
    "frames per chunk (see docs/format.md); readers need `import hdf5plugin` except for gzip/lzf"
)


def add_compression_arg(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """The shared `--compression SPEC` option (checked when parsed)."""

    def spec(text: str) -> str:
        from demoset.errors import DemosetError
        from demoset.format import parse_compression

        try:
            return str(parse_compression(text))
        except DemosetError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    parser.add_argument(
        "--compression", type=spec, default=default, metavar="SPEC", help=COMPRESSION_HELP
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="rewrite a dataset with lossless image compression (a new file)",
        description="Write a copy of a robomimic-layout file whose image arrays (and depth) are "
        "stored with a lossless filter, chunked over several frames of a demo. Filter keys, "
        "attributes and other arrays are kept. robomimic reads the result after "
        "`import hdf5plugin`.",
    )
    add_dataset_arg(p)
    p.add_argument("--out", "-o", required=True, help="the new file")
    add_compression_arg(p, default="zstd")
    p.add_argument(
        "--verify", action="store_true", help="read every frame back and compare with the input"
    )
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p.set_defaults(func=run_compress)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def run_compress(args: argparse.Namespace) -> int:
    from demoset.compress import compress_file

    path = dataset_path(args)
    with progress_bar(None, "compress", unit="frame") as bar:
        report = compress_file(
            path,
            args.out,
            compression=args.compression,
            overwrite=args.overwrite,
            verify=args.verify,
            progress=progress_callback(bar),
        )
    width = max([len(k) for k in report.keys] + [3])
    print(f"{'key'.ljust(width)}  {'before':>12}  {'after':>12}  ratio")
    for key, kb in sorted(report.keys.items(), key=lambda kv: -kv[1].before):
        ratio = kb.before / kb.after if kb.after else float("nan")
        mark = "" if kb.recoded else "  (copied)"
        print(f"{key.ljust(width)}  {_mb(kb.before):>12}  {_mb(kb.after):>12}  {ratio:5.2f}x{mark}")
    total_ratio = report.before / report.after if report.after else float("nan")
    gb = report.recoded_raw_bytes / 1e9
    per_gb = f", {report.seconds / gb:.0f} s per GB of frames" if gb > 0 else ""
    verified = ", every frame verified" if report.verified else ""
    print(
        f"wrote {report.output} ({report.compression}): {_mb(report.before)} -> "
        f"{_mb(report.after)} ({total_ratio:.2f}x) in {report.seconds:.1f} s{per_gb}{verified}"
    )
    return 0
