"""Comparing a robomimic-layout file with its round trip through another format."""

from __future__ import annotations

import h5py
import numpy as np

from demoset.convert.video_av import psnr
from demoset.format import validate

from tests.helpers import write_dataset


def write_smooth_dataset(path, n_demos: int = 4, size: int = 32, **kwargs) -> str:
    """write_dataset, then camera frames replaced by smooth moving gradients.

    Random pixels are the worst case of every video codec; gradients like rendered scenes
    give PSNR figures that say something.
    """
    write_dataset(path, n_demos=n_demos, cameras=("agentview", "wrist"), image_size=size, **kwargs)
    with h5py.File(path, "r+") as f:
        for d, demo in enumerate(sorted(f["data"].keys())):
            grp = f["data"][demo]
            n = grp["actions"].shape[0]
            yy, xx = np.mgrid[0:size, 0:size]
            for c, cam in enumerate(("agentview_image", "wrist_image")):
                t = np.arange(n + 1)[:, None, None]
                frames = np.stack(
                    [
                        (xx * 4 + t * 3 + d * 20 + c * 50) % 256,
                        (yy * 4 + t * 2) % 256,
                        ((xx + yy) * 2 + c * 90 + t * 0) % 256,
                    ],
                    axis=-1,
                ).astype(np.uint8)
                grp["obs"][cam][...] = frames[:n]
                grp["next_obs"][cam][...] = frames[1:]
    return str(path)


def differences(a: str, b: str, image_psnr: float | None = None) -> list[str]:
    """Every array, attribute and filter key of `a` that `b` does not hold bit for bit.

    Image arrays (uint8, 4-D) must be equal, or with `image_psnr` at least that PSNR.
    """
    found: list[str] = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:

        def visit(name, obj):
            if name not in fb:
                found.append(f"{name}: missing")
                return
            other = fb[name]
            for key in obj.attrs.keys():
                if key not in other.attrs:
                    found.append(f"{name}@{key}: missing")
                elif not np.array_equal(np.asarray(obj.attrs[key]), np.asarray(other.attrs[key])):
                    found.append(f"{name}@{key}: differs")
            if not isinstance(obj, h5py.Dataset):
                return
            x, y = obj[()], other[()]
            if x.dtype != y.dtype or x.shape != y.shape:
                found.append(f"{name}: {x.dtype} {x.shape} vs {y.dtype} {y.shape}")
            elif x.ndim == 4 and x.dtype == np.uint8 and image_psnr is not None:
                if psnr(x, y) < image_psnr:
                    found.append(f"{name}: PSNR {psnr(x, y):.2f} < {image_psnr:.2f}")
            elif not np.array_equal(x, y):
                found.append(f"{name}: values differ")

        fa.visititems(visit)
        for key in ("data", "mask"):
            if key in fb and key not in fa:
                found.append(f"{key}: extra")
        if "data" in fb:
            extra = set(fb["data"].keys()) - set(fa["data"].keys())
            found += [f"data/{k}: extra demo" for k in sorted(extra)]
    return found


def assert_valid(path: str) -> None:
    errors = [str(f) for f in validate(path) if f.level == "error"]
    assert errors == [], errors
