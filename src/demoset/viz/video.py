"""mp4 videos of demos (imageio-ffmpeg), from three sources:

- "obs": the image observations stored in the file; no simulator needed;
- "states": the simulator reset to each stored state and rendered;
- "actions": the stored actions replayed open-loop, with the step where the replay left
  the stored states reported per demo.

Several cameras are placed side by side; depth maps are shown as gray images normalised
per demo. Like robomimic's playback_dataset, a frame is written every `video_skip` steps
(counted from each demo's first step), demos follow each other in one file, and `n`
takes the first n demos (or n random ones with `seed`). The file is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from demoset.errors import DemosetError, LayoutError, SimulationError, WriteError
from demoset.format import constants as C
from demoset.format import open_dataset, sorted_demos
from demoset.fsutil import temp_path_beside

SOURCES = ("obs", "states", "actions")


@dataclass
class VideoReport:
    """What a video contains."""

    path: str
    demos: list[str]
    frames: int
    height: int
    width: int
    fps: float
    source: str
    panels: list[str]
    divergence: dict[str, int | None] = field(default_factory=dict)
    """For source "actions": per demo, the first action after which the replay diverged."""


def select_demos(demos: Sequence[str], n: int | None = None, seed: int | None = None) -> list[str]:
    """The first `n` demos in numeric order, or with `seed` `n` random ones (numeric order)."""
    demos = sorted_demos(demos)
    if n is None or n >= len(demos):
        return demos
    if n <= 0:
        return []
    if seed is None:
        return demos[:n]
    picked = np.random.default_rng(seed).choice(len(demos), size=n, replace=False)
    return sorted_demos(demos[i] for i in picked)


def depth_to_gray(depth: np.ndarray) -> np.ndarray:
    """(T, H, W, 1) float depth to uint8 RGB, scaled between its 1st and 99th percentiles."""
    from demoset.viz.frames import to_rgb

    return to_rgb(np.asarray(depth, dtype=np.float32))


def as_rgb(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, C) frames as uint8 RGB: images as they are, depth normalised to gray."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        return depth_to_gray(frames)
    if frames.shape[-1] == 1:
        return np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames[..., :3])


def side_by_side(panels: Sequence[np.ndarray]) -> np.ndarray:
    """(T, H, W, 3) panels joined left to right; shorter ones are padded with black below."""
    height = max(p.shape[1] for p in panels)
    padded = []
    for p in panels:
        if p.shape[1] < height:
            pad = np.zeros((p.shape[0], height - p.shape[1], *p.shape[2:]), dtype=p.dtype)
            p = np.concatenate([p, pad], axis=1)
        padded.append(p)
    return np.concatenate(padded, axis=2)


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad to even height and width (H.264 with yuv420p needs them)."""
    h, w = frames.shape[1:3]
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))


class _Mp4:
    """An mp4 written to a hidden temporary file and renamed into place on close."""

    def __init__(self, path: str, fps: float):
        try:
            import imageio.v2 as imageio
        except ImportError as exc:
            raise WriteError(
                f"videos need imageio and imageio-ffmpeg ({exc}); pip install 'demoset[video]'",
                path,
            ) from None
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise WriteError(f"directory {directory} does not exist", path)
        try:
            self.tmp = temp_path_beside(path, suffix=".partial.mp4")
        except OSError as exc:
            raise WriteError(f"cannot write ({exc.strerror or exc})", path) from None
        self.path = path
        self.frames = 0
        self.shape: tuple[int, int] | None = None
        try:
            self.writer = imageio.get_writer(
                self.tmp,
                format="FFMPEG",
                mode="I",
                fps=fps,
                codec="libx264",
                macro_block_size=1,
                pixelformat="yuv420p",
                ffmpeg_log_level="error",
            )
        except Exception as exc:  # noqa: BLE001 - missing ffmpeg binary and the like
            os.unlink(self.tmp)
            raise WriteError(f"cannot start the video encoder ({exc})", path) from None

    def append(self, frames: np.ndarray) -> None:
        frames = _even(frames)
        if self.shape is None:
            self.shape = frames.shape[1:3]
        elif frames.shape[1:3] != self.shape:
            raise WriteError(
                f"frame size {frames.shape[1:3]} differs from the first frames' {self.shape}",
                self.path,
            )
        for frame in frames:
            self.writer.append_data(frame)
            self.frames += 1

    def close(self) -> None:
        self.writer.close()
        if self.frames == 0:
            os.unlink(self.tmp)
            raise WriteError("no frames to write", self.path)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


# ---------------------------------------------------------------------------- frame sources
def resolve_obs_keys(df, demo: str, names: Sequence[str], depth: bool = False) -> list[str]:
    """Observation keys for camera or key names: `agentview` or `agentview_image` both work.

    No names: every image observation. With `depth`, each camera's `<camera>_depth` is added
    when stored.
    """
    available = df.obs_keys(demo)
    if not names:
        keys = [k for k, info in available.items() if info.is_image]
        if not keys:
            raise LayoutError(
                "no image observations to show (use source 'states' to render)",
                df.path,
                f"/data/{demo}/obs",
            )
    else:
        keys = []
        for name in names:
            for candidate in (name, f"{name}_image"):
                if candidate in available:
                    keys.append(candidate)
                    break
            else:
                known = ", ".join(k for k, i in available.items() if len(i.shape) == 3) or "none"
                raise LayoutError(
                    f"no image observation {name!r} (image observations: {known})",
                    df.path,
                    f"/data/{demo}/obs",
                )
    if depth:
        with_depth = []
        for key in keys:
            with_depth.append(key)
            cam = key[: -len("_image")] if key.endswith("_image") else key
            if f"{cam}_depth" in available and f"{cam}_depth" not in keys:
                with_depth.append(f"{cam}_depth")
        keys = with_depth
    return keys


def _obs_frames(df, demo: str, keys: Sequence[str], indices: np.ndarray) -> np.ndarray:
    panels = []
    for key in keys:
        dset = df.dataset(demo, f"{C.OBS}/{key}")
        if dset.ndim == 3:  # (T, H, W) depth without channel axis
            frames = dset[indices.tolist()][..., None]
        else:
            frames = dset[indices.tolist()]
        panels.append(as_rgb(frames))
    return side_by_side(panels)


def _render(env, cameras: Sequence[str], height: int, width: int, depth: bool) -> list[np.ndarray]:
    views = []
    for cam in cameras:
        views.append(env.render(cam, height, width))
        if depth:
            views.append(env.render(cam, height, width, depth=True))
    return views


def _stack_views(views: list[list[np.ndarray]]) -> np.ndarray:
    """Per-frame lists of views (images and depth maps) to (T, H, W, 3) side by side."""
    n_views = len(views[0])
    panels = [as_rgb(np.stack([frame[v] for frame in views])) for v in range(n_views)]
    return side_by_side(panels)


# ---------------------------------------------------------------------------- the video
def write_video(
    dataset: str | os.PathLike,
    video_path: str | os.PathLike,
    source: str = "obs",
    camera_names: Sequence[str] = (),
    demos: Sequence[str] | None = None,
    filter_key: str | None = None,
    n: int | None = None,
    seed: int | None = None,
    first: bool = False,
    fps: float = 20.0,
    video_skip: int = 5,
    height: int = 84,
    width: int = 84,
    depth: bool = False,
    atol: float = 1e-6,
    progress: Callable[[int, int], None] | None = None,
) -> VideoReport:
    """Write an mp4 of a dataset's demos; see the module docstring for the sources.

    `camera_names` are image observation keys or camera names for "obs" (default: every
    image observation) and camera names for "states"/"actions" (default: agentview).
    `first` shows only each demo's first frame. `height`/`width` size rendered frames.
    """
    if source not in SOURCES:
        raise DemosetError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if video_skip < 1:
        raise DemosetError("video_skip must be at least 1")
    dataset, video_path = os.fspath(dataset), os.fspath(video_path)
    with open_dataset(dataset) as df:
        chosen = (
            list(demos) if demos is not None else select_demos(df.demos_for(filter_key), n, seed)
        )
        if not chosen:
            raise LayoutError("no demos to show", dataset, "/data")
        env = None
        if source != "obs":
            from demoset.sim.extract_demo import source_env_meta
            from demoset.sim.factory import make_env

            env = make_env(source_env_meta(df), render_offscreen=True)
            cameras = list(camera_names) or ["agentview"]
            panels = [v for cam in cameras for v in ([cam, f"{cam} depth"] if depth else [cam])]
        else:
            keys = resolve_obs_keys(df, chosen[0], camera_names, depth)
            panels = list(keys)
        report = VideoReport(video_path, chosen, 0, 0, 0, fps, source, panels)
        video = _Mp4(video_path, fps)
        try:
            for i, demo in enumerate(chosen):
                length = df.num_samples(demo)
                indices = np.arange(0, 1 if first else length, video_skip)
                if source == "obs":
                    frames = _obs_frames(df, demo, keys, indices)
                elif source == "states":
                    frames = _states_frames(env, df, demo, indices, cameras, height, width, depth)
                else:
                    frames, result = _actions_frames(
                        env, df, demo, indices, cameras, height, width, depth, atol, first
                    )
                    report.divergence[demo] = (
                        result.first_divergence if result is not None else None
                    )
                video.append(frames)
                if progress is not None:
                    progress(i + 1, len(chosen))
            video.close()
        except BaseException:
            video.abort()
            raise
        finally:
            if env is not None:
                env.close()
    report.frames = video.frames
    report.height, report.width = video.shape or (0, 0)
    return report


def _states_frames(env, df, demo, indices, cameras, height, width, depth) -> np.ndarray:
    from demoset.sim.playback import initial_state

    if not df.has(demo, C.STATES):
        raise SimulationError("demo has no states to render", df.path, f"/data/{demo}/states")
    states = df.dataset(demo, C.STATES)
    env.reset_to(initial_state(df, demo))
    views = []
    for t in indices.tolist():
        env.reset_to({"states": states[t]})
        views.append(_render(env, cameras, height, width, depth))
    return _stack_views(views)


def _actions_frames(env, df, demo, indices, cameras, height, width, depth, atol, first):
    from demoset.sim.playback import initial_state, replay_demo

    wanted = set(indices.tolist())
    views: list[list[np.ndarray]] = []

    def on_step(t: int) -> None:
        if t in wanted:
            views.append(_render(env, cameras, height, width, depth))

    if first:
        env.reset_to(initial_state(df, demo))
        on_step(0)
        return _stack_views(views), None
    result = replay_demo(env, df, demo, atol=atol, on_step=on_step)
    return _stack_views(views), result
