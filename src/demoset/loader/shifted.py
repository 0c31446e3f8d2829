"""An image key's obs and next_obs held once, when next_obs is obs one step on.

Files written by robomimic's and demoset's tools store `next_obs[t] = obs[t + 1]`; only a
demo's last next observation is new. Caching both (cache_mode "all") holds every frame
twice. A `ShiftedPair` holds each demo's obs frames followed by its final next_obs frame,
L + 1 rows for a demo of L steps, in one shared array: obs step t of demo d (flat frame
f) is row f + d, and its next observation is row f + d + 1, padding included (a padded
position repeats the edge step, whose next observation is the edge row's successor).

The rule is checked for every demo as it is loaded. The first demo that breaks it turns
the pair into two plain `RamArray`s (obs, next_obs) for good, so samples never depend on
the file having followed the rule.

A batch without padding reads its obs and next_obs windows as one block of T + 1 rows
per window: `obs` is the block's first T rows and `next_obs` its last T (views of one
array; the same values, half the copying).
"""

from __future__ import annotations

import numpy as np

from demoset.loader.alloc import BatchPlan
from demoset.loader.arrays import RamArray
from demoset.loader.reader import DemoReader, byte_offsets, read_by_offsets


def next_obs_follows(obs: np.ndarray, nxt: np.ndarray) -> bool:
    """The rule: a demo's next_obs is its obs one step on (`next_obs[t] == obs[t + 1]`)."""
    return bool(np.array_equal(nxt[:-1], obs[1:]))


class ShiftedPair:
    """obs/<key> and next_obs/<key> of the selected demos, held once when the rule holds."""

    cached = True

    def __init__(self, key: str, frame_shape: tuple[int, ...], dtype, stored_dtype=None):
        self.key = key
        self.rows = RamArray(f"obs/{key}", frame_shape, dtype, stored_dtype)
        self.frame_shape, self.dtype = self.rows.frame_shape, self.rows.dtype
        self.stored_dtype = self.rows.stored_dtype
        self.split: tuple[RamArray, RamArray] | None = None
        self.frames = 0
        self._lengths: list[int] = []  # of the demos held, in order
        self._reserved = (0, 0)

    @property
    def nbytes(self) -> int:
        if self.split is not None:
            return self.split[0].nbytes + self.split[1].nbytes
        return self.rows.nbytes

    def side(self, group: str) -> PairSide:
        return PairSide(self, group)

    # ------------------------------------------------------------------ loading
    def reserve(self, frames: int, demos: int = 0) -> None:
        self._reserved = (frames, demos)
        if self.split is not None:
            for array in self.split:
                array.reserve(frames)
        else:
            self.rows.reserve(frames + demos)

    def truncate(self, frames: int, count: int) -> None:
        if self.split is not None:
            for array in self.split:
                array.truncate(frames, count)
        else:
            self.rows.truncate(frames + count, count)
        self._lengths = self._lengths[:count]
        self.frames = int(sum(self._lengths))

    def append(self, reader: DemoReader, demos: list[str], lengths: np.ndarray, progress=None):
        """Read `demos` (see `RamArray.append`): demos read by byte offset wait for the
        returned function, unless a demo read through h5py comes after them."""
        pending: list[tuple[str, int, np.ndarray, np.ndarray]] = []

        def flush() -> None:
            for demo, length, obs_offs, next_offs in pending:
                obs = self._read(reader, demo, "obs", length, obs_offs)
                nxt = self._read(reader, demo, "next_obs", length, next_offs)
                self._add(obs, nxt)
                if progress is not None:
                    progress(2 * length)
            pending.clear()

        for i, (demo, length) in enumerate(zip(demos, lengths)):
            length = int(length)
            offs = [
                byte_offsets(
                    reader,
                    demo,
                    f"{group}/{self.key}",
                    self.frame_shape,
                    self.stored_dtype,
                    length,
                    verify=i == 0,
                )
                for group in ("obs", "next_obs")
            ]
            pending.append((demo, length, *offs))
            if offs[0] is None or offs[1] is None:  # through h5py: now, inside the session
                flush()
        return flush if pending else None

    def _read(self, reader: DemoReader, demo: str, group: str, length: int, offsets) -> np.ndarray:
        out = np.empty((length, *self.frame_shape), dtype=self.stored_dtype)
        if offsets is None:
            reader.read_into(demo, f"{group}/{self.key}", out)
        else:
            read_by_offsets(reader, out, offsets, f"/data/{demo}/{group}/{self.key}")
        return out

    def _add(self, obs: np.ndarray, nxt: np.ndarray) -> None:
        if self.split is None and not next_obs_follows(obs, nxt):
            self._split()
        if self.split is not None:
            self.split[0].extend(obs)
            self.split[1].extend(nxt)
        else:
            self.rows.extend(obs)
            self.rows.extend(nxt[-1:])
        self.frames += len(obs)
        self._lengths.append(len(obs))

    def _split(self) -> None:
        """Turn the shared rows into separate obs and next_obs arrays (a demo broke the rule)."""
        held = self.rows.data
        obs, nxt = self._array("obs"), self._array("next_obs")
        for array in (obs, nxt):
            array.reserve(max(self._reserved[0], self.frames))
        row = 0
        for length in self._lengths:  # demo by demo: views, no copy of the whole cache
            obs.extend(held[row : row + length])
            nxt.extend(held[row + 1 : row + length + 1])
            row += length + 1
        self.split = (obs, nxt)
        self.rows = self._array("obs")  # empty: the shared rows are freed

    def _array(self, group: str) -> RamArray:
        return RamArray(f"{group}/{self.key}", self.frame_shape, self.dtype, self.stored_dtype)

    # ------------------------------------------------------------------ reading
    def gather(self, group: str, plan: BatchPlan) -> np.ndarray:
        if self.split is not None:
            return self.split[group == "next_obs"].gather_windows(plan)
        win = plan.win
        out = plan.empty((win.size, win.length, *self.frame_shape), self.dtype)
        rows = win.shifted_rows(int(group == "next_obs"))
        self.rows.take_into(rows, out.reshape((-1, *self.frame_shape)))
        return out

    def gather_both(self, plan: BatchPlan) -> tuple[np.ndarray, np.ndarray]:
        """(obs, next_obs) windows: views of one block of T + 1 rows per window when the
        batch has no padding, else two gathers."""
        win = plan.win
        if self.split is not None or win.padded:
            return self.gather("obs", plan), self.gather("next_obs", plan)
        length = win.length
        block = plan.empty((win.size, length + 1, *self.frame_shape), self.dtype)
        rows = win.shifted_rows(0, span=length + 1)
        self.rows.take_into(rows, block.reshape((-1, *self.frame_shape)))
        return block[:, :length], block[:, 1:]

    def gather_frames(
        self, group: str, flat: np.ndarray, demo: np.ndarray, step: np.ndarray, plan: BatchPlan
    ) -> np.ndarray:
        if self.split is not None:
            return self.split[group == "next_obs"].gather_frames(flat, demo, step, plan)
        out = plan.empty((len(flat), *self.frame_shape), self.dtype)
        self.rows.take_into(flat + demo + (group == "next_obs"), out)
        return out

    def demo_arrays(self, group: str, starts, lengths):
        if self.split is not None:
            yield from self.split[group == "next_obs"].demo_arrays(None, None, lengths, starts)
            return
        data = self.rows.data
        shift = int(group == "next_obs")
        for i, (start, length) in enumerate(zip(starts, lengths)):
            begin = int(start) + i + shift
            yield data[begin : begin + int(length)]


class PairSide:
    """obs/<key> or next_obs/<key> of a `ShiftedPair`, with the interface of a `RamArray`
    where one key is read on its own (goals, statistics); the pair loads and counts."""

    cached = True
    nbytes = 0  # the pair counts its bytes once

    def __init__(self, pair: ShiftedPair, group: str):
        self.pair = pair
        self.group = group
        self.frame_shape = pair.frame_shape
        self.dtype = pair.dtype

    def append(self, reader, demos, lengths, progress=None):
        return None  # the pair reads both groups

    def reserve(self, frames: int, demos: int = 0) -> None:
        pass

    def truncate(self, frames: int, count: int) -> None:
        pass

    def gather_windows(self, plan: BatchPlan) -> np.ndarray:
        return self.pair.gather(self.group, plan)

    def gather_frames(
        self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray, plan: BatchPlan
    ) -> np.ndarray:
        return self.pair.gather_frames(self.group, flat, demo, step, plan)

    def demo_arrays(self, reader, demos, lengths, starts):
        return self.pair.demo_arrays(self.group, starts, lengths)
