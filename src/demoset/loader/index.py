"""Window arithmetic: which sequence windows a dataset has and which frames each one reads.

All demos live back to back in flat per-key arrays; demo `d` holds the flat frames
`starts[d] .. starts[d] + lengths[d] - 1`. A *sample* is one window of
`T = frame_stack - 1 + seq_length` frames anchored at a step of a demo, with robomimic's
rules:

- A demo of length L gives `L - (frame_stack - 1 if not pad_frame_stack else 0)
  - (seq_length - 1 if not pad_seq_length else 0)` windows (at least 1 when
  pad_seq_length). The first anchor is step 0 with pad_frame_stack, else step
  frame_stack - 1.
- The window of anchor `a` covers steps `a - (frame_stack - 1) .. a + seq_length - 1`;
  steps before 0 repeat step 0 and steps after L - 1 repeat step L - 1 (padding by
  repeating the edge frame), which is the same as clipping the step into `[0, L - 1]`.
- `pad_mask` is True where the step was inside the demo.
- The goal of `goal_mode="last"` is step `L - 1 - (seq_length - 1 if not pad_seq_length else 0)`
  of next_obs.

Everything here is vectorised over a batch of sample indices; there is no per-sample loop.
The index lays the demos out once more in *padded* coordinates: each demo's steps with
`frame_stack - 1` slots before them and `seq_length - 1` after, so that every window is
`T` consecutive padded positions. A table maps each padded position to the flat frame it
reads (the clipped step), and a sliding view of it gives a batch's `(B, T)` frames in one
lookup: no clipping arithmetic per batch.
"""

from __future__ import annotations

import numpy as np

from demoset.errors import ConfigError


class Windows:
    """The frames of a batch of windows, in flat and in per-demo coordinates.

    flat:      (B, T) flat frame index of every window position, already clipped (padded).
    demo:      (B,) position of each window's demo in the dataset's demo list.
    begin/end: (B,) the steps [begin, end) of the demo the window really reads.
    pad_front: (B,) how many leading positions repeat step `begin`.
    valid:     (B, T) True where the position is a real step (robomimic's pad_mask).
    goal:      (B,) flat frame index of the goal step (goal_mode="last").
    goal_step: (B,) the same goal as a step of its demo.

    Only `flat` is computed up front (one lookup of the index's window table); the rest
    when first asked for.
    """

    __slots__ = ("flat", "_index", "_ids", "_padded_first", "_cache")

    def __init__(self, index: WindowIndex, ids: np.ndarray):
        self._index = index
        self._ids = ids
        self._padded_first = index.sample_padded_first.take(ids)
        self.flat = index.window_frames[self._padded_first]
        self._cache: dict = {}

    @property
    def flat_frames(self) -> np.ndarray:
        """`flat` as one row of frame indices (B * T,), the order a batch array is filled in."""
        return self.flat.reshape(-1)

    @property
    def size(self) -> int:
        return int(self.flat.shape[0])

    @property
    def length(self) -> int:
        return int(self.flat.shape[1])

    @property
    def demo(self) -> np.ndarray:
        if "demo" not in self._cache:
            self._cache["demo"] = self._index.sample_demo.take(self._ids)
        return self._cache["demo"]

    def shifted_rows(self, shift: int, span: int = 0) -> np.ndarray:
        """Rows to read from a store that keeps one more row after each demo (obs and
        next_obs held once, see `shifted`), as one contiguous (B * T,) index: the window
        frames moved on by the demo's position, plus `shift`. With `span`, each window
        is instead its first row and the `span - 1` after it, unclipped ((B * span,)).
        Cached: every image key of a batch reads the same rows."""
        key = ("shifted", shift, span)
        if key not in self._cache:
            if span:
                first = self.flat[:, 0] + self.demo + shift
                rows = (first[:, None] + np.arange(span)).reshape(-1)
            else:
                rows = (self.flat + (self.demo[:, None] + shift)).reshape(-1)
            self._cache[key] = rows
        return self._cache[key]

    @property
    def valid(self) -> np.ndarray:
        if "valid" not in self._cache:
            self._cache["valid"] = self._index.window_real[self._padded_first]
        return self._cache["valid"]

    def _local(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "local" not in self._cache:
            index, demo = self._index, self.demo
            local_first = self._padded_first - index.padded_starts[demo] - index.pad_before
            begin = np.maximum(local_first, 0)
            end = np.minimum(local_first + self.length, index.lengths[demo])
            self._cache["local"] = (begin, end, begin - local_first)
        return self._cache["local"]

    @property
    def begin(self) -> np.ndarray:
        return self._local()[0]

    @property
    def end(self) -> np.ndarray:
        return self._local()[1]

    @property
    def pad_front(self) -> np.ndarray:
        return self._local()[2]

    @property
    def padded(self) -> bool:
        """Whether any window runs past its demo (cheaper than `padding` when none does)."""
        if "padded" not in self._cache:
            self._cache["padded"] = bool(self._index.sample_padded[self._ids].any())
        return self._cache["padded"]

    @property
    def padded_windows(self) -> list[tuple[int, int, int]]:
        """(b, front, stop) of each window b that runs past its demo: positions before
        `front` repeat position `front`, and positions from `stop` on repeat `stop - 1`
        (a window read as its real steps [begin, end) placed from pad_front on)."""
        if "padded_windows" not in self._cache:
            found = []
            if self.padded:
                rows = np.flatnonzero(self._index.sample_padded.take(self._ids))
                front = self.pad_front[rows]
                stop = front + (self.end - self.begin)[rows]
                found = list(zip(rows.tolist(), front.tolist(), stop.tolist()))
            self._cache["padded_windows"] = found
        return self._cache["padded_windows"]

    @property
    def goal_step(self) -> np.ndarray:
        return self._index.goal_steps[self.demo]

    @property
    def goal(self) -> np.ndarray:
        return self._index.starts[self.demo] + self.goal_step


class WindowIndex:
    """All windows of a dataset, as a few small arrays instead of a dict per sample.

    Per sample i: `sample_demo[i]` its demo, `sample_padded_first[i]` the padded position
    of its window's first step, `sample_padded[i]` whether the window runs past its demo.
    Per padded position: `window_frames` (as a sliding view, one row per window start) the
    flat frame it reads and `window_real` whether it is a real step. About 13 bytes per
    sample and 9 per frame.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        frame_stack: int = 1,
        seq_length: int = 1,
        pad_frame_stack: bool = True,
        pad_seq_length: bool = True,
        demo_names: list[str] | None = None,
    ):
        if int(frame_stack) < 1:
            raise ConfigError(f"frame_stack must be >= 1, got {frame_stack}")
        if int(seq_length) < 1:
            raise ConfigError(f"seq_length must be >= 1, got {seq_length}")
        self.frame_stack = int(frame_stack)
        self.seq_length = int(seq_length)
        self.pad_frame_stack = bool(pad_frame_stack)
        self.pad_seq_length = bool(pad_seq_length)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.starts = np.zeros(len(self.lengths), dtype=np.int64)
        if len(self.lengths):
            np.cumsum(self.lengths[:-1], out=self.starts[1:])

        history = self.frame_stack - 1
        first_anchor = 0 if self.pad_frame_stack else history
        counts = self.lengths - first_anchor - (0 if self.pad_seq_length else self.seq_length - 1)
        if self.pad_seq_length:
            counts = np.maximum(counts, 1)
        # every anchor must be a real step of its demo (robomimic asserts the same)
        too_short = (
            (counts < 1) | (first_anchor + counts - 1 > self.lengths - 1) | (self.lengths < 1)
        )
        if np.any(too_short):
            d = int(np.flatnonzero(too_short)[0])
            name = demo_names[d] if demo_names else f"demo at position {d}"
            need = first_anchor + (1 if self.pad_seq_length else self.seq_length)
            raise ConfigError(
                f"{name} has {int(self.lengths[d])} steps but frame_stack={self.frame_stack}, "
                f"seq_length={self.seq_length} with pad_frame_stack={self.pad_frame_stack}, "
                f"pad_seq_length={self.pad_seq_length} need at least {need}; turn padding on "
                "or leave short demos out with a filter key"
            )
        counts = counts.astype(np.int64)
        sample_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=sample_offsets[1:])
        self._size = n = int(sample_offsets[-1])
        demos = len(self.lengths)
        self.sample_demo = np.repeat(np.arange(demos, dtype=np.int32), counts)
        step = np.arange(n, dtype=np.int64) - np.repeat(sample_offsets[:-1], counts)

        # padded coordinates: demo d's step j sits at padded_starts[d] + pad_before + j
        self.pad_before = history
        pad_after = self.seq_length - 1
        spans = self.lengths + (history + pad_after)
        self.padded_starts = self.starts + np.arange(demos, dtype=np.int64) * (history + pad_after)
        position_demo = np.repeat(np.arange(demos), spans)
        local = np.arange(int(spans.sum()), dtype=np.int64) - np.repeat(
            self.padded_starts + history, spans
        )
        last_step = self.lengths[position_demo] - 1
        self._position_frames = self.starts[position_demo] + np.clip(local, 0, last_step)
        self._position_real = (local >= 0) & (local <= last_step)
        self._slide()
        local_first = step + first_anchor - history  # a window's first step (< 0: padded)
        self.sample_padded_first = self.padded_starts[self.sample_demo] + history + local_first
        self.sample_padded = (local_first < 0) | (
            local_first + (self.window_length - 1) > self.lengths[self.sample_demo] - 1
        )
        """Per sample: whether its window runs past its demo (a batch checks this first)."""
        # last step of each demo a goal may come from
        self.goal_steps = self.lengths - 1 - (0 if self.pad_seq_length else self.seq_length - 1)

    def _slide(self) -> None:
        self.window_frames = _sliding(self._position_frames, self.window_length)
        """(padded positions - T + 1, T): row p is the flat frames of the window starting at p."""
        self.window_real = _sliding(self._position_real, self.window_length)
        """The same rows as `window_frames`: whether each position is a real step."""

    def __getstate__(self) -> dict:
        # the sliding views would pickle as T times their bytes: send the positions only
        state = dict(self.__dict__)
        del state["window_frames"], state["window_real"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._slide()

    def __len__(self) -> int:
        return self._size

    @property
    def window_length(self) -> int:
        return self.frame_stack - 1 + self.seq_length

    def check_indices(self, indices) -> np.ndarray:
        """Sample indices as int64, negative ones counted from the end (IndexError if out of range)."""
        if isinstance(indices, list):
            ids = np.fromiter(indices, dtype=np.int64, count=len(indices))
        else:
            ids = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self._size
        # one reduction for the usual case: as unsigned, a negative index is huge too
        if ids.size and int(ids.view(np.uint64).max()) >= n:
            low, high = int(ids.min()), int(ids.max())
            if low < -n or high >= n:
                bad = int(ids[(ids < -n) | (ids >= n)][0])
                raise IndexError(f"sample index {bad} out of range for a dataset of {n} samples")
            if low < 0:
                ids = np.where(ids < 0, ids + n, ids)
        return ids

    def windows(self, ids: np.ndarray) -> Windows:
        """Frames of the windows of samples `ids` (already checked, int64)."""
        return Windows(self, ids)


def _sliding(values: np.ndarray, width: int) -> np.ndarray:
    """Read-only (len - width + 1, width) view of `values`: row p is values[p : p + width]."""
    rows = max(len(values) - width + 1, 0)
    return np.lib.stride_tricks.as_strided(
        values, (rows, width), (values.strides[0],) * 2, writeable=False
    )
