"""How camera arrays are stored: a lossless compression setting, and what a file uses.

Consecutive frames of a demo are nearly equal, so a chunk that spans several frames of one
demo compresses like video, yet bit for bit. `Compression` names a codec, a level and the
frames per chunk; `parse_compression` reads the command-line form `CODEC[:LEVEL[:FRAMES]]`
(`zstd:9:16`, `blosc2`, `gzip`, `none`). Only image-shaped arrays (H, W, C) are
compressed: uint8 frames, and float frames (depth) byte-shuffled first, with the codecs
made for this (zstd, lz4hc, blosc2-*). `zstd` is the default (the smallest files that
decode fast); `lz4hc` (LZ4HC inside HDF5's Blosc filter) makes files of frames under
64 KB about a quarter bigger that decode 2.6-3.9x faster, for loaders that read the
images from the file. Every codec here is read by plain h5py after `import hdf5plugin`
(gzip and lzf without it), which is what robomimic needs.

`storage_of` describes how an existing array is stored (filters, frames per chunk, ratio),
and `missing_filter` names the filter and the package providing it when HDF5 cannot
decode a chunk, so the user is told what to install instead of HDF5's error stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from demoset.errors import DemosetError, LayoutError
from demoset.format import constants as C

# codec name -> (default level, default frames per chunk)
CODECS: dict[str, tuple[int | None, int]] = {
    "none": (None, 0),
    "blosc2-zstd": (5, 16),
    "blosc2-lz4": (5, 16),
    "blosc2-lz4hc": (9, 16),
    "zstd": (9, 16),
    "lz4hc": (9, 16),
    # the older names keep one frame per chunk unless FRAMES is given (as before)
    "gzip": (4, 1),
    "lzf": (None, 1),
    "lz4": (None, 1),
    "blosc": (5, 1),
}
ALIASES = {"blosc2": "blosc2-zstd", "off": "none", "raw": "none"}
DEFAULT_SPEC = "zstd:9:16"
"""What `demoset compress` writes unless told: chosen from the measurements in docs/format.md
(ratios like Blosc2's, decoded 2-4x faster through HDF5, a checksum per chunk)."""

# HDF5 filter id -> (name, package providing it); for files this process cannot decode
FILTER_NAMES: dict[int, tuple[str, str]] = {
    1: ("gzip (deflate)", "HDF5 itself"),
    2: ("shuffle", "HDF5 itself"),
    3: ("fletcher32", "HDF5 itself"),
    4: ("szip", "HDF5 built with szip (libaec)"),
    6: ("scale-offset", "HDF5 itself"),
    307: ("bzip2", "hdf5plugin"),
    32000: ("lzf", "h5py"),
    32001: ("blosc", "hdf5plugin"),
    32004: ("lz4", "hdf5plugin"),
    32008: ("bitshuffle", "hdf5plugin"),
    32013: ("zfp", "hdf5plugin"),
    32015: ("zstd", "hdf5plugin"),
    32017: ("sz", "hdf5plugin"),
    32018: ("fcidecomp", "hdf5plugin"),
    32024: ("sz3", "hdf5plugin"),
    32026: ("blosc2", "hdf5plugin"),
    32028: ("sperr", "hdf5plugin"),
    32029: ("htj2k", "hdf5plugin"),
}


_registered = False


def register_filters() -> None:
    """Load hdf5plugin's filters into HDF5 once (silently absent when not installed)."""
    global _registered
    if not _registered:
        _registered = True
        try:
            import hdf5plugin  # noqa: F401
        except ImportError:
            pass


def _plugins():
    try:
        import hdf5plugin
    except ImportError as exc:  # pragma: no cover - hdf5plugin is a core dependency
        raise DemosetError(f"this compression needs hdf5plugin ({exc})") from None
    return hdf5plugin


@dataclass(frozen=True)
class Compression:
    """A lossless storage setting for image-shaped arrays.

    `codec` one of CODECS, `level` the codec's level (None: its default), `frames` the
    frames of one demo per chunk (0: contiguous, uncompressed).
    """

    codec: str = "none"
    level: int | None = None
    frames: int = 0

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise DemosetError(
                f"unknown image compression {self.codec!r} (choose from {', '.join(CODECS)})"
            )
        default_level, default_frames = CODECS[self.codec]
        if self.level is None and default_level is not None:
            object.__setattr__(self, "level", default_level)
        if self.codec == "none":
            object.__setattr__(self, "frames", 0)
        elif self.frames <= 0:
            object.__setattr__(self, "frames", default_frames)

    @property
    def enabled(self) -> bool:
        return self.codec != "none"

    def __str__(self) -> str:
        if not self.enabled:
            return "none"
        level = "" if self.level is None else str(self.level)
        return f"{self.codec}:{level}:{self.frames}"

    def applies_to(self, shape: tuple[int, ...], dtype) -> bool:
        """Whether an array of (N, *shape) and dtype is stored with this setting."""
        dtype = np.dtype(dtype)
        if not self.enabled or not C.is_image_shape(tuple(shape), dtype):
            return False
        if dtype == np.uint8:
            return True
        # float frames (depth): only the codecs made for this release; the older names
        # compress uint8 frames only, as they always did
        return dtype.kind in "fiu" and self.codec.startswith(("blosc2", "zstd", "lz4hc"))

    def filter_kwargs(self, dtype) -> dict[str, Any]:
        """h5py create_dataset keywords of the filter (without chunks)."""
        dtype = np.dtype(dtype)
        codec, level = self.codec, self.level
        if codec == "gzip":
            return {"compression": "gzip", "compression_opts": int(level)}
        if codec == "lzf":
            return {"compression": "lzf"}
        plugin = _plugins()
        if codec == "lz4":
            return dict(plugin.LZ4())
        if codec == "blosc":
            return dict(plugin.Blosc(cname="lz4", clevel=int(level)))
        if codec == "zstd":
            # fletcher32: a checksum per chunk, so a damaged chunk is an error, not wrong
            # frames (zstd alone decodes some damage silently); HDF5's byte shuffle puts
            # the slowly changing high bytes of float frames (depth) side by side
            kwargs = {**plugin.Zstd(clevel=int(level)), "fletcher32": True}
            if dtype.itemsize > 1:
                kwargs["shuffle"] = True
            return kwargs
        if codec == "lz4hc":
            # Blosc 1 (filter 32001), whose chunks the loader decodes itself (numcodecs);
            # its byte shuffle for float frames, a checksum per chunk as for zstd
            shuffle = plugin.Blosc.SHUFFLE if dtype.itemsize > 1 else plugin.Blosc.NOSHUFFLE
            blosc = plugin.Blosc(cname="lz4hc", clevel=int(level), shuffle=shuffle)
            return {**blosc, "fletcher32": True}
        # blosc2-*: its own byte shuffle (better than bit shuffle here, floats included)
        cname = codec.split("-", 1)[1]
        return dict(plugin.Blosc2(cname=cname, clevel=int(level), filters=plugin.Blosc2.SHUFFLE))

    def dataset_kwargs(self, shape: tuple[int, ...], dtype, length: int) -> dict[str, Any]:
        """Keywords for create_dataset of a (length, *shape) array ({} when not applied)."""
        if not self.applies_to(shape, dtype):
            return {}
        frames = max(1, min(int(self.frames), int(length)))
        return {"chunks": (frames, *shape), **self.filter_kwargs(dtype)}


NONE = Compression()


def parse_compression(
    spec: str | Compression | None, level: int | None = None, frames: int | None = None
) -> Compression:
    """A Compression from `CODEC[:LEVEL[:FRAMES]]` (None/"none": uncompressed).

    `level` / `frames`, when given, replace the ones in `spec`. Raises DemosetError on an
    unknown codec or a non-integer level or frame count.
    """
    if isinstance(spec, Compression):
        parsed = spec
    else:
        text = (spec or "none").strip().lower()
        parts = text.split(":")
        if len(parts) > 3:
            raise DemosetError(f"compression {spec!r}: expected CODEC[:LEVEL[:FRAMES]]")
        codec = ALIASES.get(parts[0], parts[0])
        try:
            lvl = int(parts[1]) if len(parts) > 1 and parts[1] else None
            frm = int(parts[2]) if len(parts) > 2 and parts[2] else 0
        except ValueError:
            raise DemosetError(
                f"compression {spec!r}: LEVEL and FRAMES must be whole numbers"
            ) from None
        if frm < 0 or (lvl is not None and lvl < 0):
            raise DemosetError(f"compression {spec!r}: LEVEL and FRAMES must not be negative")
        parsed = Compression(codec, lvl, frm)
    if level is not None or frames is not None:
        parsed = Compression(
            parsed.codec,
            parsed.level if level is None else int(level),
            parsed.frames if frames is None else int(frames),
        )
    return parsed


# ---------------------------------------------------------------------------- reading
def filter_ids(dset: h5py.Dataset) -> list[int]:
    """The HDF5 filter ids of a dataset's pipeline, in order."""
    try:
        plist = dset.id.get_create_plist()
        return [int(plist.get_filter(i)[0]) for i in range(plist.get_nfilters())]
    except (OSError, RuntimeError, ValueError):
        return []


def filter_label(fid: int) -> str:
    name = FILTER_NAMES.get(fid)
    return f"{name[0]} (filter {fid})" if name else f"filter {fid}"


def filter_available(fid: int) -> bool:
    try:
        return bool(h5py.h5z.filter_avail(fid))
    except (OSError, RuntimeError, ValueError):  # pragma: no cover
        return False


def missing_filter(dset: h5py.Dataset) -> str | None:
    """A one-line message when a filter of `dset` cannot be decoded here, else None."""
    register_filters()  # hdf5plugin's filters, when it is installed
    for fid in filter_ids(dset):
        if not filter_available(fid):
            name, package = FILTER_NAMES.get(fid, (f"filter {fid}", None))
            if package is None:
                return f"compressed with HDF5 filter {fid}, which no installed package provides"
            hint = "" if package.startswith("HDF5") else f" (pip install {package})"
            return f"compressed with {name} (HDF5 filter {fid}), not available here; it comes with {package}{hint}"
    return None


def storage_of(dset: h5py.Dataset) -> dict[str, Any]:
    """How an array is stored: {"filters": [names], "chunk_frames": int | None,
    "stored_bytes": int, "raw_bytes": int, "ratio": float | None}."""
    raw = int(np.prod(dset.shape, dtype=np.int64)) * dset.dtype.itemsize if dset.shape else 0
    try:
        stored = int(dset.id.get_storage_size())
    except (OSError, RuntimeError):
        stored = 0
    chunks = dset.chunks
    return {
        "filters": [FILTER_NAMES.get(f, (f"filter {f}",))[0] for f in filter_ids(dset)],
        "chunk_frames": int(chunks[0]) if chunks else None,
        "stored_bytes": stored,
        "raw_bytes": raw,
        "ratio": (raw / stored) if stored else None,
    }


def describe_storage(info: dict[str, Any]) -> str:
    """One line: 'blosc2, 16 frames/chunk, 7.9x' or 'contiguous, 1.0x'."""
    filters = "+".join(info["filters"]) or "no filter"
    layout = (
        "contiguous" if info["chunk_frames"] is None else f"{info['chunk_frames']} frames/chunk"
    )
    ratio = "-" if info["ratio"] is None else f"{info['ratio']:.1f}x"
    return f"{filters}, {layout}, {ratio}"


class FilterUnavailableError(LayoutError):
    """An array is compressed with an HDF5 filter this process cannot decode."""


def read_failure(
    dset: h5py.Dataset, path: str, h5path: str, start: int, stop: int, exc: BaseException
) -> LayoutError:
    """The error for a failed read of frames [start, stop) of `dset`.

    A filter that is not installed is named with the package providing it; otherwise a
    compressed array's chunk did not decode (damaged), and the frame range is named.
    """
    missing = missing_filter(dset)
    if missing is not None:
        return FilterUnavailableError(missing, path, h5path)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    frames = f"frames {start}-{stop - 1}" if stop - start > 1 else f"frame {start}"
    if filter_ids(dset):
        chunk = dset.chunks[0] if dset.chunks else 1
        lo, hi = (start // chunk) * chunk, -(-stop // chunk) * chunk - 1
        return LayoutError(
            f"cannot decompress {frames} (a damaged chunk among frames {lo}-{hi}: {first})",
            path,
            h5path,
        )
    return LayoutError(f"cannot read {frames} ({first})", path, h5path)
