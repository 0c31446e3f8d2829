"""Camera frames to and from video files with PyAV, for the LeRobot converters.

LeRobot keeps each camera as MP4 video, the episodes of a file one after another on the
time axis. `VideoEncoder` writes such a file frame by frame (presentation time = frame
number / fps, so the k-th frame is at k / fps seconds) and `iter_frames` reads one back
with the time of each frame. `psnr` measures what a lossy codec lost.

Codecs (`CODECS`): "h264" and "av1" are lossy (YUV 4:2:0, what LeRobot itself writes;
av1 is LeRobot's default); "h264-lossless" (x264's RGB encoder at qp 0, decoded as planar
RGB) keeps every pixel exactly. All three decode with the ffmpeg that LeRobot's decoders
(torchcodec, torchvision's PyAV backend) use. FFV1 is not offered: the MP4 muxer of the
ffmpeg inside LeRobot's PyAV refuses it, so LeRobot's own tools (the v2.1 -> v3.0
converter, dataset aggregation) cannot copy such files. Like LeRobot, a key frame every 2 frames
keeps seeking to any frame cheap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from demoset.errors import ConversionError


@dataclass(frozen=True)
class Codec:
    """How one `--video-codec` choice is encoded."""

    encoder: str
    pix_fmt: str
    name: str
    """The codec name LeRobot's info.json records (video.codec)."""
    stored_pix_fmt: str
    """The pixel format a decoder reports for the stream (video.pix_fmt)."""
    lossless: bool
    options: tuple[tuple[str, str], ...]


CODECS: dict[str, Codec] = {
    "h264": Codec(
        "libx264", "yuv420p", "h264", "yuv420p", False, (("crf", "18"), ("preset", "fast"))
    ),
    "av1": Codec("libsvtav1", "yuv420p", "av1", "yuv420p", False, (("crf", "30"), ("preset", "8"))),
    "h264-lossless": Codec(
        "libx264rgb", "rgb24", "h264", "gbrp", True, (("qp", "0"), ("preset", "fast"))
    ),
}
DEFAULT_CODEC = "h264"
GOP = 2
"""A key frame every GOP frames, as LeRobot encodes (fast random access while training)."""


def _av():
    try:
        import av
    except ImportError:
        raise ConversionError(
            "video needs PyAV (pip install 'demoset[lerobot]' or pip install av)"
        ) from None
    return av


def codec(name: str) -> Codec:
    """The Codec of a `--video-codec` name; ConversionError for an unknown one."""
    try:
        return CODECS[name]
    except KeyError:
        raise ConversionError(
            f"unknown video codec {name!r} (choose from {', '.join(CODECS)})"
        ) from None


class VideoEncoder:
    """Append RGB frames (H, W, 3) uint8 to one MP4 file at a fixed frame rate."""

    def __init__(
        self, path: str, fps: int, height: int, width: int, codec_name: str, crf: int | None = None
    ):
        av = _av()
        self.path = path
        self.codec = codec(codec_name)
        if not self.codec.lossless and (height % 2 or width % 2):
            raise ConversionError(
                f"{codec_name} video needs an even frame size, not {height}x{width}; "
                "use --video-codec h264-lossless or ffv1",
                path,
            )
        options = dict(self.codec.options)
        if crf is not None and not self.codec.lossless:
            options["crf"] = str(int(crf))
        options["g"] = str(GOP)
        self._container = av.open(path, "w")
        self._stream = self._container.add_stream(self.codec.encoder, rate=fps, options=options)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = self.codec.pix_fmt
        self._stream.time_base = Fraction(1, fps)
        self.frames = 0
        self.bytes = 0
        self._VideoFrame = av.VideoFrame

    def _mux(self, packets) -> None:
        for packet in packets:
            self.bytes += packet.size
            self._container.mux(packet)

    def add(self, frames: np.ndarray) -> None:
        """Encode frames (N, H, W, 3) uint8 after those already written."""
        for frame in frames:
            vf = self._VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if self.codec.pix_fmt != "rgb24":
                vf = vf.reformat(format=self.codec.pix_fmt)
            vf.pts = self.frames
            self.frames += 1
            self._mux(self._stream.encode(vf))

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        try:
            self._mux(self._stream.encode())
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway
                pass
            self._container = None


def iter_frames(path: str) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, RGB frame (H, W, 3) uint8) for each frame of the file's first video.

    ConversionError for a missing file or one ffmpeg cannot decode.
    """
    av = _av()
    if not os.path.isfile(path):
        raise ConversionError("video file is missing", path)
    try:
        container = av.open(path)
    except Exception as exc:  # noqa: BLE001 - av raises many kinds of errors
        raise ConversionError(f"not a readable video ({exc})", path) from None
    try:
        if not container.streams.video:
            raise ConversionError("no video stream", path)
        stream = container.streams.video[0]
        base = stream.time_base
        try:
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else frame.dts
                yield float(pts * base), frame.to_ndarray(format="rgb24")
        except ConversionError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"video cannot be decoded ({exc})", path) from None
    finally:
        container.close()


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of 8-bit images from their mean squared error (inf when equal)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(255.0**2 / mse)


class PsnrMeter:
    """Accumulates squared error over frame pairs: overall PSNR and the worst frame's."""

    def __init__(self) -> None:
        self.sq_sum = 0.0
        self.values = 0
        self.worst_mse = 0.0
        self.frames = 0

    def add(self, original: np.ndarray, decoded: np.ndarray) -> None:
        diff = original.astype(np.int32) - decoded.astype(np.int32)
        sq = (diff * diff).reshape(diff.shape[0], -1).astype(np.float64)
        per_frame = sq.mean(axis=1)
        self.sq_sum += float(sq.sum())
        self.values += sq.size
        self.frames += diff.shape[0]
        if per_frame.size:
            self.worst_mse = max(self.worst_mse, float(per_frame.max()))

    @property
    def psnr(self) -> float:
        return psnr_from_mse(self.sq_sum / self.values) if self.values else math.inf

    @property
    def min_frame_psnr(self) -> float:
        return psnr_from_mse(self.worst_mse)


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB between two uint8 frame stacks of the same shape (inf when identical)."""
    meter = PsnrMeter()
    meter.add(original, decoded)
    return meter.psnr
