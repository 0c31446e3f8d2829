"""An image key's obs and next_obs read from the file once, for demos where next_obs is
obs one step on.

The file-reading counterpart of `shifted.py`. Without a cache, obs and next_obs windows
are two reads of the page cache per window, and the page cache is the slowest copy a batch
makes. Where `next_obs[t] == obs[t + 1]` for a whole demo, a window's next observations
are its observations one step on: a batch with no padded window reads T + 1 obs frames per
window once (the last one from next_obs when the window reaches the demo's end), and obs
and next_obs are two views of that block.

Whether a demo follows the rule is found out the first time one of its windows is asked
for, by reading its obs and next_obs in full and comparing them (each process does this
once per demo: about one T-th of what an epoch reads). Batches with padding, or with a
demo that breaks the rule, are read as two arrays as before.

The same pairing serves compressed chunks held in RAM (cache "all" with `cache_compressed`,
`chunk_pair.KnownRulePair`, whose rule is known from loading): there too a frame costs a
decode, so obs is decoded once per batch and next_obs taken from it.
"""

from __future__ import annotations

import numpy as np

from demoset.loader.alloc import BatchPlan
from demoset.loader.arrays import FileArray, WindowReads, fill_padding
from demoset.loader.shifted import next_obs_follows

UNKNOWN, BREAKS, FOLLOWS = -1, 0, 1
FINAL_FRAMES_BYTES = 64 << 20
"""Decoded final next_obs frames kept per compressed key and process (see
`FilePair._final_frames`): every demo's of most datasets (3,000 demos of 84x84 RGB)."""


class FilePair:
    """obs/<key> and next_obs/<key> (`FileArray`s, or arrays decoded from chunks held in
    RAM: see `chunk_pair.KnownRulePair`), read once where the rule holds."""

    def __init__(self, obs: WindowReads, nxt: WindowReads):
        self.obs = obs
        self.next = nxt
        self.rule = np.zeros(0, dtype=np.int8)
        """Per demo: FOLLOWS, BREAKS or UNKNOWN (not looked at yet in this process)."""
        self._finals: dict[str, np.ndarray] = {}
        """Demo name -> its final next_obs frame, decoded in this process (`_final_frames`)."""

    def gather(self, group: str, plan: BatchPlan) -> np.ndarray:
        return (self.next if group == "next_obs" else self.obs).gather_windows(plan)

    def gather_both(self, plan: BatchPlan) -> tuple[np.ndarray, np.ndarray]:
        """(obs, next_obs) windows read once where all the batch's demos follow the rule.

        Without padding both are views of one block. With padding they are two arrays
        made from the one block, which only pays where a frame costs more to read than to
        copy: compressed arrays (each frame decoded once instead of twice)."""
        win = plan.win
        if (win.padded and not self.obs.compressed) or not self.follows(win.demo).all():
            return self.gather("obs", plan), self.gather("next_obs", plan)
        length = win.length
        block = plan.empty((win.size, length + 1, *self.obs.frame_shape), self.obs.dtype)
        demo_length = self._lengths()[win.demo]
        begin, end, front = win.begin, win.end, win.pad_front
        stop = np.minimum(end + 1, demo_length)
        at_end = np.flatnonzero(stop == end)  # the window's last next_obs is the demo's last
        self.obs.read_windows(block, win.demo, begin, stop, front)
        if at_end.size:
            last = end[at_end] - 1
            rows = (front + end - begin)[at_end]
            block[at_end, rows] = self._final_frames(win.demo[at_end], last, plan)
        if not win.padded:
            return block[:, :length], block[:, 1:]
        obs = plan.empty((win.size, length, *self.obs.frame_shape), self.obs.dtype)
        obs[...] = block[:, :length]
        fill_padding(obs, win)
        nxt = block[:, 1:]
        fill_padding(nxt, win)
        return obs, nxt

    def _final_frames(self, demos: np.ndarray, last: np.ndarray, plan: BatchPlan) -> np.ndarray:
        """The final next_obs frame of each of `demos` (step `last`, its last step).

        A window that reaches its demo's end needs next_obs's final frame, the one frame
        obs lacks. Read from a compressed array that is a whole chunk decoded for one frame
        (a fifth of all decoding on demos of 50 steps), so those frames are kept once
        decoded, up to FINAL_FRAMES_BYTES per key and process."""
        if not (isinstance(self.next, FileArray) and self.next.compressed):
            return self.next.gather_frames(last, demos, last, plan)  # a cheap read
        kept = self._finals
        names = self.next.demos
        wanted = [names[d] for d in demos.tolist()]
        first: dict[str, int] = {}  # each demo not kept yet, at its first window
        for i, name in enumerate(wanted):
            if name not in kept:
                first.setdefault(name, i)
        read: dict[str, np.ndarray] = {}
        if first:
            new = np.fromiter(first.values(), dtype=np.int64)
            frames = self.next.gather_frames(last[new], demos[new], last[new], plan)
            room = FINAL_FRAMES_BYTES // max(frames[0].nbytes, 1)
            for name, frame in zip(first, frames):
                read[name] = frame
                if len(kept) < room:
                    kept[name] = frame.copy()
        out = plan.empty((len(demos), *self.next.frame_shape), self.next.dtype)
        for i, name in enumerate(wanted):
            out[i] = read[name] if name in read else kept[name]
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_finals"] = {}  # each process keeps its own
        return state

    def _lengths(self) -> np.ndarray:
        return np.diff(np.append(self.obs.starts, self.obs.frames))

    def follows(self, demos: np.ndarray) -> np.ndarray:
        """Whether each of `demos` (positions in the dataset) follows the rule; demos not
        looked at yet are read and compared now."""
        count = len(self.obs.starts)
        if len(self.rule) < count:  # demos added by refresh()
            self.rule = np.concatenate(
                [self.rule[:count], np.full(count - len(self.rule), UNKNOWN, dtype=np.int8)]
            )
        for d in np.unique(demos[self.rule[demos] == UNKNOWN]).tolist():
            obs, nxt = self._whole(self.obs, d), self._whole(self.next, d)
            self.rule[d] = FOLLOWS if next_obs_follows(obs, nxt) else BREAKS
        return self.rule[demos] == FOLLOWS

    def _whole(self, array: WindowReads, d: int) -> np.ndarray:
        length = int(self._lengths()[d])
        out = np.empty((1, length, *array.frame_shape), dtype=array.dtype)
        zero = np.zeros(1, dtype=np.int64)
        array.read_windows(out, np.array([d]), zero, np.array([length]), zero)
        return out[0]
