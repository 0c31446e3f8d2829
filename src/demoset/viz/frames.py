"""Turning camera frames into pictures for a page: RGB conversion, resizing, strips, clips.

Frames come from the file as uint8 (H, W, C) images or float depth maps (H, W, 1). They
are converted to RGB, scaled to a comfortable size (tiny test images are enlarged with
nearest-neighbour so their pixels stay crisp; large renders are shrunk), then encoded as a
PNG strip or an animated WebP (GIF when Pillow lacks WebP) for embedding as a data URI.
"""

from __future__ import annotations

import base64
import io

import numpy as np

DISPLAY_SIZE = 160
"""Target size, in pixels, of the longer side of a frame shown in a report."""


def to_rgb(frames: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """(n, H, W, C) uint8 RGB from camera frames or depth maps.

    uint8 images keep their values (alpha dropped, gray repeated to three channels). Float
    frames (depth) are mapped to gray between `value_range` or, by default, the 1st and
    99th percentiles of their finite values.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.dtype != np.uint8:
        values = frames.astype(np.float64)
        finite = values[np.isfinite(values)]
        if value_range is None:
            lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        else:
            lo, hi = value_range
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        values = np.nan_to_num((values - lo) * scale, nan=0.0, posinf=255.0, neginf=0.0)
        frames = np.clip(values, 0, 255).astype(np.uint8)
    channels = frames.shape[-1]
    if channels == 1:
        return np.repeat(frames, 3, axis=-1)
    if channels == 2:
        return np.repeat(frames[..., :1], 3, axis=-1)
    return np.ascontiguousarray(frames[..., :3])


def fit(frames: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    """RGB frames scaled so the longer side is about `size` pixels.

    Frames at least two times too small grow by a whole factor with nearest-neighbour, so
    tiny renders stay crisp; other sizes are resampled smoothly to exactly `size`.
    """
    frames = np.asarray(frames)
    if frames.size == 0:
        return frames
    h, w = frames.shape[1:3]
    longest = max(h, w)
    if longest == size:
        return frames
    factor = size // longest
    if factor >= 2:
        return frames.repeat(factor, axis=1).repeat(factor, axis=2)
    from PIL import Image

    new_w = max(1, round(w * size / longest))
    new_h = max(1, round(h * size / longest))
    out = np.empty((len(frames), new_h, new_w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BILINEAR)
        out[i] = np.asarray(image)
    return out


def grid(frames: np.ndarray, cols: int, gap: int = 2, background: int = 255) -> np.ndarray:
    """Frames in a grid of `cols` columns (row by row), `gap` pixels of `background` apart."""
    frames = np.asarray(frames)
    n, h, w = frames.shape[:3]
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.full(
        (rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), background, np.uint8
    )
    for i, frame in enumerate(frames):
        y, x = (i // cols) * (h + gap), (i % cols) * (w + gap)
        out[y : y + h, x : x + w] = frame
    return out


def strip(frames: np.ndarray, gap: int = 2, background: int = 255) -> np.ndarray:
    """Frames side by side in one image, separated by `gap` pixels of `background`."""
    return grid(frames, len(frames), gap, background)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of one RGB uint8 image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def clip_format() -> str:
    """ "webp" when this Pillow can write animated WebP, else "gif"."""
    from PIL import features

    return "webp" if features.check("webp") else "gif"


def encode_clip(frames: np.ndarray, fps: float = 8.0, fmt: str | None = None) -> tuple[bytes, str]:
    """A looping animation of RGB frames; returns (bytes, mime type).

    Animated WebP (lossy, quality 75) is several times smaller than GIF for camera
    images and every current browser plays it; GIF is the fallback.
    """
    from PIL import Image

    fmt = fmt or clip_format()
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    if not images:
        raise ValueError("no frames to encode")
    duration = max(20, round(1000.0 / fps))
    buf = io.BytesIO()
    if fmt == "webp":
        images[0].save(
            buf,
            format="WEBP",
            save_all=True,
            append_images=images[1:],
            duration=duration,
            loop=0,
            quality=75,
            method=2,
        )
        return buf.getvalue(), "image/webp"
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
    )
    return buf.getvalue(), "image/gif"


def data_uri(data: bytes, mime: str) -> str:
    """A `data:` URI embedding `data`, so a page needs no other files."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
