"""`demoset download`: the public robomimic and MOMART datasets, resumable.

Flags follow robomimic's download_datasets.py (--tasks, --dataset_types, --hdf5_types,
--download_dir, --dry_run) with shorter single forms (--task, --type, --hdf5-type, --dir).
"""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="download public robomimic / MOMART datasets (resumable, size-checked)",
        description="Download public robomimic and MOMART dataset files into "
        "DIR/<task>/<type>/<file>. An interrupted download resumes from its .part file; the file "
        "appears under its final name only when complete. Task groups: all, sim, real (robomimic), "
        "momart (all MOMART tasks).",
    )
    p.add_argument(
        "--task", "--tasks", dest="tasks", nargs="+", default=None, help="tasks (default lift)"
    )
    p.add_argument(
        "--type",
        "--dataset-type",
        "--dataset_types",
        dest="dataset_types",
        nargs="+",
        default=None,
        help="dataset types: ph mh mg paired (robomimic), expert suboptimal generalize sample "
        "(MOMART), or all (default ph / expert)",
    )
    p.add_argument(
        "--hdf5-type",
        "--hdf5_types",
        dest="hdf5_types",
        nargs="+",
        default=None,
        help="raw low_dim image low_dim_sparse low_dim_dense image_sparse image_dense, or all "
        "(default low_dim)",
    )
    p.add_argument(
        "--dir",
        "--download-dir",
        "--download_dir",
        dest="dir",
        default="datasets",
        help="base download directory (default ./datasets)",
    )
    p.add_argument("--url", default=None, help="download this URL instead (a mirror)")
    p.add_argument(
        "--size", type=int, default=None, help="expected size in bytes (refuse otherwise)"
    )
    p.add_argument("--list", action="store_true", help="list the known releases and exit")
    p.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="say what would be downloaded",
    )
    p.add_argument("--overwrite", action="store_true", help="download again files that exist")
    p.add_argument(
        "--retries", type=int, default=5, help="retries after a dropped connection (default 5)"
    )
    p.set_defaults(func=run)


def _selection(args: argparse.Namespace):
    from demoset.download import RELEASES, find_releases

    if args.list and args.tasks is None and args.dataset_types is None and args.hdf5_types is None:
        return list(RELEASES)
    return find_releases(
        tasks=args.tasks or ["lift"],
        dataset_types=args.dataset_types,
        hdf5_types=args.hdf5_types or (["all"] if args.list else ["low_dim"]),
    )


def _describe(rel) -> str:
    parts = [rel.task, rel.dataset_type] + ([rel.hdf5_type] if rel.hdf5_type else [])
    extra = []
    if rel.horizon:
        extra.append(f"horizon {rel.horizon}")
    if rel.size_gb:
        extra.append(f"~{rel.size_gb:g} GB")
    return "/".join(parts) + (f" ({', '.join(extra)})" if extra else "")


def run(args: argparse.Namespace) -> int:
    from demoset.download import download_file, download_release
    from demoset.errors import DownloadError

    if args.url and args.tasks is None:
        dest = os.path.join(args.dir, args.url.rstrip("/").rsplit("/", 1)[-1])
        if args.dry_run:
            print(f"dry run: would download {args.url} to {dest}")
            return 0
        result = _with_bar(
            lambda cb: download_file(
                args.url,
                dest,
                expected_size=args.size,
                progress=cb,
                retries=args.retries,
                overwrite=args.overwrite,
            ),
            dest,
        )
        print(f"downloaded {result.path} ({result.size} bytes)")
        return 0

    releases = _selection(args)
    if args.list:
        for rel in releases:
            print(f"{_describe(rel)}: {rel.url or 'no public file (extract from raw)'}")
        return 0
    if not releases:
        raise DownloadError("no release matches the selection (see demoset download --list)")
    if args.url and len(releases) != 1:
        raise DownloadError(
            f"--url replaces one release's address, but {len(releases)} were selected"
        )
    failures = 0
    for rel in releases:
        url = args.url or rel.url
        if url is None:
            print(
                f"skip {_describe(rel)}: no public file; download the raw file and extract observations"
            )
            continue
        dest = rel.destination(args.dir) or os.path.join(
            args.dir, rel.task, rel.dataset_type, url.rsplit("/", 1)[-1]
        )
        if args.dry_run:
            print(f"dry run: {_describe(rel)}: {url} -> {dest}")
            continue
        if os.path.exists(dest) and not args.overwrite:
            print(f"skip {_describe(rel)}: {dest} exists (--overwrite to download again)")
            continue
        print(f"downloading {_describe(rel)} to {dest}")
        try:
            result = _with_bar(
                lambda cb, rel=rel, url=url: download_release(
                    rel,
                    args.dir,
                    url=url,
                    expected_size=args.size,
                    progress=cb,
                    retries=args.retries,
                    overwrite=args.overwrite,
                ),
                dest,
            )
        except DownloadError as exc:
            if len(releases) == 1:
                raise
            print(f"demoset download: error: {exc.one_line()}", file=sys.stderr)
            failures += 1
            continue
        resumed = f", resumed from byte {result.resumed_from}" if result.resumed_from else ""
        print(f"downloaded {result.path} ({result.size} bytes{resumed})")
    return 2 if failures else 0


def _with_bar(action, dest: str):
    from tqdm import tqdm

    bar = tqdm(
        total=None,
        desc=os.path.basename(dest),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not sys.stderr.isatty(),
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        return action(update)
    finally:
        bar.close()
