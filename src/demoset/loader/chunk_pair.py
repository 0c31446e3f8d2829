"""An image key's obs and next_obs held as compressed chunks, next_obs once where it is obs
one step on (`cache_compressed`).

The compressed counterpart of `shifted.py`. Files written by robomimic's and demoset's tools
store `next_obs[t] = obs[t + 1]`: holding both groups' chunks would hold every frame twice.
A `ChunkPair` holds

- `obs`: the obs chunks of every demo (a `RamChunks`);
- `tails`: each demo's final next observation, raw (one frame per demo, a `RamArray`);
- `own`: the next_obs chunks of the demos that break the rule, only (a `RamChunks`).

Each demo is checked as it is loaded: its obs and next_obs chunks are decoded and compared
(a demo's next_obs chunks are fetched into a scratch `RamChunks` for that, so a damaged one
is named as in `ram_chunks.py`, and dropped unless the demo breaks the rule). Loading thus
decodes every image frame once; in exchange the rule is known before any batch, in every
worker, and next_obs costs one raw frame per demo.

Batches: `NextSide` serves next_obs windows (obs one step on and the tail where the demo
follows the rule, its own chunks where not); `KnownRulePair` is a `file_pair.FilePair`
whose rule comes from loading, so a batch decodes its obs windows once and takes next_obs
from them one step on.
"""

from __future__ import annotations

import numpy as np

from demoset.loader.arrays import RamArray
from demoset.loader.file_pair import FilePair
from demoset.loader.ram_chunks import DecodedWindows, RamChunks
from demoset.loader.reader import DemoReader
from demoset.loader.shifted import next_obs_follows


class ChunkPair:
    """obs/<key> and next_obs/<key> of the selected demos as compressed chunks, next_obs
    held once (its final frame) for the demos where it is obs one step on."""

    cached = True

    def __init__(self, key: str, frame_shape: tuple[int, ...], dtype, path: str):
        self.key = key
        self.obs = RamChunks(f"obs/{key}", frame_shape, dtype, path)
        self.own = RamChunks(f"next_obs/{key}", frame_shape, dtype, path)
        self.tails = RamArray(f"next_obs/{key}", frame_shape, dtype)
        self.own_index = np.zeros(0, dtype=np.int64)
        """Per demo: its position in `own`, or -1 where next_obs is obs one step on."""
        self.frame_shape, self.dtype = self.obs.frame_shape, self.obs.dtype
        self.next_side = NextSide(self)

    @property
    def nbytes(self) -> int:
        held = self.obs.nbytes + self.own.nbytes + self.tails.nbytes
        return held + int(self.own_index.nbytes)

    # ------------------------------------------------------------------ loading
    def measure(self, reader: DemoReader, demos: list[str], lengths: np.ndarray) -> int:
        """Bytes `demos` will take when their next_obs is obs one step on (their obs chunks
        and one frame each); a demo that breaks the rule adds its next_obs chunks."""
        return self.obs.measure(reader, demos, lengths) + len(demos) * self.obs.frame_bytes

    def reserve(self, frames: int, demos: int = 0) -> None:
        self.obs.reserve(frames, demos)
        self.tails.reserve(demos)

    def append(self, reader: DemoReader, demos: list[str], lengths: np.ndarray, progress=None):
        """Load `demos` (inside a reader session), checking the rule for each."""
        count = len(self.obs.demos)
        self.obs.append(reader, demos, lengths)
        probe = RamChunks(self.own.key, self.frame_shape, self.dtype, self.obs.path)
        probe.measure(reader, demos, lengths)
        probe.reserve(0)
        probe.append(reader, demos, lengths)  # next_obs chunks, checksums checked
        index, breaking = [], []
        for i, length in enumerate(lengths):
            nxt = probe.demo_frames(i)
            self.tails.extend(nxt[-1:])
            if next_obs_follows(self.obs.demo_frames(count + i), nxt):
                index.append(-1)
            else:
                index.append(len(self.own.demos) + len(breaking))
                breaking.append(i)
            if progress is not None:
                progress(2 * int(length))
        del probe
        if breaking:  # read again: few demos break the rule, if any
            self.own.append(reader, [demos[i] for i in breaking], np.asarray(lengths)[breaking])
        self.own_index = np.concatenate([self.own_index, index]).astype(np.int64)
        return None

    def truncate(self, frames: int, count: int) -> None:
        """Forget demos after the first `count` (an append that failed half-way)."""
        self.obs.truncate(frames, count)
        self.tails.truncate(count, count)
        self.own_index = self.own_index[:count]
        kept = int((self.own_index >= 0).sum())
        own_frames = int(self.own.starts[kept]) if kept < len(self.own.demos) else self.own.frames
        self.own.truncate(own_frames, kept)


class NextSide(DecodedWindows):
    """next_obs/<key> of a `ChunkPair`: obs one step on (and the final frame) where the demo
    follows the rule, the demo's own chunks where not."""

    nbytes = 0  # the pair counts its bytes

    def __init__(self, pair: ChunkPair):
        self.pair = pair
        self.frame_shape = pair.frame_shape
        self.dtype = pair.dtype

    def demo_length(self, d: int) -> int:
        return self.pair.obs.demo_length(d)

    def read_windows(self, out, demo, begin, end, pad_front, rows=None) -> None:
        """next_obs windows [begin, end) into `out` (see `RamChunks.read_windows`)."""
        pair = self.pair
        demo = np.asarray(demo, dtype=np.int64)
        rows = np.arange(len(demo)) if rows is None else np.asarray(rows, dtype=np.int64)
        own = pair.own_index[demo]
        i = np.flatnonzero(own < 0)
        if i.size:  # next_obs[t] = obs[t + 1] before the final step
            length = np.diff(np.append(pair.obs.starts, pair.obs.frames))[demo[i]]
            stop = np.minimum(end[i], length - 1)
            pair.obs.read_windows(out, demo[i], begin[i] + 1, stop + 1, pad_front[i], rows[i])
            at_end = i[end[i] == length]
            if at_end.size:
                col = pad_front[at_end] + (length - 1 - begin[i])[end[i] == length]
                out[rows[at_end], col] = pair.tails.data[demo[at_end]]
        j = np.flatnonzero(own >= 0)
        if j.size:
            pair.own.read_windows(out, own[j], begin[j], end[j], pad_front[j], rows[j])


class KnownRulePair(FilePair):
    """A FilePair over a `ChunkPair`: whether each demo follows the rule was found while
    loading, so no process decodes whole demos again to find out."""

    def __init__(self, pair: ChunkPair):
        super().__init__(pair.obs, pair.next_side)
        self.pair = pair

    def follows(self, demos: np.ndarray) -> np.ndarray:
        return self.pair.own_index[demos] < 0
