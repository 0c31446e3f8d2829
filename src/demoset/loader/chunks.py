"""Windows of a compressed image array read chunk by chunk: each chunk decoded once per batch.

A compressed array (see format/compression.py) is stored in chunks of several frames of
one demo. Reading window after window through h5py decodes a chunk again for every window
that touches it, and resolves the dataset again each time (a path lookup with safety
checks, about as slow as decoding a chunk). Here the windows of one batch are grouped by
demo; for each demo the chunks any of its windows need are read once, run by run of
adjacent chunks (one h5py read decodes each chunk of a run once, straight into a scratch
block), and every window copies its frames out of that block.

Dataset handles are kept per process (a small LRU), except in follow (swmr) mode, where
they live only as long as the reader session, as DemoReader requires.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import h5py
import numpy as np

from demoset.errors import LayoutError
from demoset.format import read_failure

HANDLES = 512
"""Resolved dataset handles kept per process (each holds a little HDF5 memory)."""


class ChunkWindows:
    """Reads windows of one key of a `DemoReader` through whole chunks (one per file array)."""

    def __init__(self, reader, key: str):
        self.reader = reader
        self.key = key
        self._pid: int | None = None
        self._handles: OrderedDict[str, h5py.Dataset] = OrderedDict()

    def __getstate__(self):
        return {"reader": self.reader, "key": self.key}

    def __setstate__(self, state):
        self.__init__(state["reader"], state["key"])

    def _dataset(self, demo: str) -> h5py.Dataset:
        reader = self.reader
        if reader.swmr:
            # a fresh handle each session: a plain lookup by path. The safety checks of
            # DemoFile.dataset (links out of the file, declared size; the latter walks the
            # chunk index) ran when the demo was indexed, and a committed demo never
            # changes (writers only append), so they are not repeated for every batch.
            try:
                return reader.demofile().h5[f"/data/{demo}/{self.key}"]
            except (KeyError, OSError, ValueError, RuntimeError):
                return reader.dataset(demo, self.key)  # let it raise its own error
        if self._pid != os.getpid():  # handles of another process are not ours to use
            self._handles = OrderedDict()
            self._pid = os.getpid()
        dset = self._handles.get(demo)
        if dset is None:
            dset = reader.dataset(demo, self.key)
            self._handles[demo] = dset
            if len(self._handles) > HANDLES:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(demo)
        return dset

    def read(self, demos: list[str], begins: list[int], outs: list[np.ndarray]) -> None:
        """outs[i][:] = frames begins[i] .. begins[i] + len(outs[i]) of demo demos[i].

        Called inside a reader session. Each chunk is decoded at most once per call.
        """
        by_demo: dict[str, list[int]] = {}
        for i, demo in enumerate(demos):
            by_demo.setdefault(demo, []).append(i)
        for demo, items in by_demo.items():
            dset = self._dataset(demo)
            n = int(dset.shape[0])
            where = f"/data/{demo}/{self.key}"
            stops = {i: begins[i] + len(outs[i]) for i in items}
            if max(stops.values()) > n:
                raise LayoutError(
                    f"array has {n} steps, fewer than the demo's {max(stops.values())}",
                    self.reader.path,
                    where,
                )
            if not dset.chunks:  # contiguous: each window is one plain read
                for i in items:
                    self._read_block(dset, outs[i], begins[i], stops[i], where)
                continue
            per = int(dset.chunks[0])
            needed: set[int] = set()
            for i in items:
                needed.update(range(begins[i] // per, -(-stops[i] // per)))
            for first, last in _runs(sorted(needed)):
                a, b = first * per, min((last + 1) * per, n)
                block = np.empty((b - a, *dset.shape[1:]), dtype=outs[items[0]].dtype)
                self._read_block(dset, block, a, b, where)
                for i in items:  # a window's chunks are adjacent: it lies in one run
                    if begins[i] >= a and stops[i] <= b:
                        outs[i][...] = block[begins[i] - a : stops[i] - a]

    def _read_block(self, dset, out: np.ndarray, a: int, b: int, where: str) -> None:
        try:
            if b > a:
                dset.read_direct(out, np.s_[a:b])
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise read_failure(dset, self.reader.path, where, a, b, exc) from None


def _runs(chunks: list[int]) -> list[tuple[int, int]]:
    """Runs of adjacent chunk indices: [(first, last), ...]."""
    runs: list[tuple[int, int]] = []
    for c in chunks:
        if runs and c == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    return runs
