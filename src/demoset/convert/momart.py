"""MOMART datasets: check them and add the train / valid split they lack.

MOMART files (mobile manipulation in iGibson) are already in the robomimic layout, with
env type 3 and large RGB and depth images. "Converting" one means: validate it, refuse it
when it has errors, and add the `train` / `valid` filter keys when they are missing (the
split robomimic's `split_train_val.py` makes with the same ratio and seed).

Two ways to write:
- default: a new file. The source is copied byte for byte to a hidden temporary file
  beside the output, the filter keys are added there, and the copy is renamed into place
  only when complete; the source is not modified.
- `in_place=True`: only the `mask` group of the source is edited (a few bytes); no image
  is copied or rewritten. This is the one case where the user's file changes, and it is
  only done when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from demoset.errors import ConversionError, DemosetError, WriteError
from demoset.format import ENV_TYPE_IG_MOMART, open_dataset, untrusted_input, validate
from demoset.fsutil import replace_durably, same_file, temp_path_beside
from demoset.masks import split_demos, split_train_valid

COPY_CHUNK = 64 << 20


@dataclass
class MomartResult:
    """What `convert_momart` did."""

    out: str
    in_place: bool
    demos: int
    transitions: int
    added_filter_keys: dict[str, int] = field(default_factory=dict)
    """Filter keys added -> number of demos."""
    existing_filter_keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Validation warnings of the source (errors refuse the conversion)."""


def _copy_with_progress(src: str, dst, progress: Callable[[int, int], None] | None) -> None:
    total = os.path.getsize(src)
    done = 0
    with open(src, "rb") as fin:
        while True:
            chunk = fin.read(COPY_CHUNK)
            if not chunk:
                break
            dst.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    dst.flush()
    os.fsync(dst.fileno())


@untrusted_input(error=ConversionError)  # h5py errors on a damaged source
def convert_momart(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    in_place: bool = False,
    val_ratio: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    require_momart_type: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> MomartResult:
    """Validate the MOMART file `src` and add missing splits, in a new file `out` or in place."""
    src = os.fspath(src)
    if in_place == (out is not None):
        raise ConversionError(
            "give either an output file or in_place=True (--in-place), not both or neither", src
        )
    if out is not None and same_file(src, out):
        raise ConversionError(
            "the output would overwrite the source; use --in-place or another --out", out
        )
    findings = validate(src)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        first = errors[0]
        raise ConversionError(
            f"{len(errors)} validation error(s), first: {first.h5path}: {first.message}; run `demoset validate`",
            src,
        )
    warnings = [f"{f.h5path}: {f.message}" for f in findings if f.level == "warning"]
    with open_dataset(src) as df:
        meta = df.env_meta
        if require_momart_type and (meta is None or meta.env_type != ENV_TYPE_IG_MOMART):
            found = "none" if meta is None else meta.env_type
            raise ConversionError(
                f"env_args type is {found}, MOMART files have type {ENV_TYPE_IG_MOMART} (iGibson)",
                src,
                "/data.attrs[env_args]",
            )
        demos = df.demos
        transitions = int(df.lengths().sum())
        existing = df.filter_keys
    if len(demos) == 0:
        raise ConversionError("the file has no demos", src, "/data")
    present = set(existing)
    if ("train" in present) != ("valid" in present):
        only = "train" if "train" in present else "valid"
        raise ConversionError(
            f"has filter key '{only}' without its partner; fix the split with `demoset split` first",
            src,
            f"/mask/{only}",
        )
    added: dict[str, int] = {}
    if "train" not in present:
        train, valid = split_demos(demos, val_ratio, seed)  # checks the ratio before any write
        added = {"train": len(train), "valid": len(valid)}

    if in_place:
        if added:
            split_train_valid(src, ratio=val_ratio, seed=seed)
        target = src
    else:
        target = os.fspath(out)
        if os.path.exists(target) and not overwrite:
            raise WriteError("file exists; pass overwrite=True (--overwrite) to replace it", target)
        directory = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(directory):
            raise WriteError(f"directory {directory} does not exist", target)
        tmp = temp_path_beside(target)
        try:
            with open(tmp, "wb") as fout:
                _copy_with_progress(src, fout, progress)
            if added:
                split_train_valid(tmp, ratio=val_ratio, seed=seed)
            replace_durably(tmp, target)
        except DemosetError:
            _remove(tmp)
            raise
        except BaseException as exc:
            _remove(tmp)
            if isinstance(exc, OSError):
                raise WriteError(f"copy failed ({exc.strerror or exc})", target) from None
            raise
    return MomartResult(
        out=target,
        in_place=in_place,
        demos=len(demos),
        transitions=transitions,
        added_filter_keys=added,
        existing_filter_keys=existing,
        warnings=warnings,
    )


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
