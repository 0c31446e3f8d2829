"""Small cached keys side by side, so a batch gathers them all with one take.

A low-dim batch of 100 windows of 10 steps gathers 1,000 rows from each of nine arrays
(actions, four obs keys, four next_obs keys); each gather costs about 7 us of numpy call
and per-row overhead whatever the row's width, which was most of a batch's time. A
`RamPack` holds every cached key with scalar or vector steps (shape () or (d,)), whatever
its dtype, as a byte range of the rows of one shared (frames, row bytes) uint8 array: one
take per batch, and each key's batch is a typed view of its columns of the gathered block.
Each key's bytes start at a multiple of its item size and rows are a multiple of 8 bytes,
so the views are aligned. `PackColumn` is one key's view of a pack with the interface of a
`RamArray` (statistics, goals), so the rest of the loader does not know keys are packed.
"""

from __future__ import annotations

import math

import numpy as np

from demoset.loader.alloc import BatchPlan
from demoset.loader.arrays import RamArray
from demoset.loader.reader import DemoReader, byte_offsets, read_by_offsets


def packable(frame_shape: tuple[int, ...]) -> bool:
    """Keys whose frames are scalars or vectors can share a pack's rows."""
    return len(frame_shape) <= 1


class RamPack(RamArray):
    """Cached keys as byte ranges of the rows of one shared (frames, row bytes) uint8 array.

    members: key -> (frame shape, stored dtype, served dtype), in column order.
    """

    def __init__(self, members: dict[str, tuple[tuple[int, ...], np.dtype, np.dtype]]):
        self.members = {
            k: (tuple(shape), np.dtype(stored), np.dtype(served))
            for k, (shape, stored, served) in members.items()
        }
        self.columns: dict[str, tuple[int, int]] = {}
        width = 0
        for key, (shape, _, served) in self.members.items():
            width = -(-width // served.itemsize) * served.itemsize  # aligned start
            self.columns[key] = (width, width + math.prod(shape) * served.itemsize)
            width = self.columns[key][1]
        width = -(-width // 8) * 8
        super().__init__("+".join(self.members), (width,), np.uint8)
        # a row as one record whose fields are the members: taking each key's field of
        # the gathered block costs about a quarter of building a strided array per key
        self._record = np.dtype(
            {
                "names": list(self.members),
                "formats": [(served, shape) for shape, _, served in self.members.values()],
                "offsets": [self.columns[k][0] for k in self.members],
                "itemsize": width,
            }
        )

    def typed(self, rows: np.ndarray, key: str) -> np.ndarray:
        """Key `key` of byte rows (n, row bytes) as a typed (n, *frame shape) view."""
        return rows.view(self._record)[:, 0][key]

    def append(self, reader: DemoReader, demos: list[str], lengths: np.ndarray, progress=None):
        """Make room for `demos` and read every member key (see `RamArray.append`)."""
        need = self.frames + int(np.sum(lengths))
        if need > self._data.shape[0]:
            self._grow(need)
        pending = []
        for key, (shape, stored, _) in self.members.items():
            pos = self.frames
            for i, (demo, length) in enumerate(zip(demos, lengths)):
                length = int(length)
                offs = byte_offsets(reader, demo, key, shape, stored, length, verify=i == 0)
                if offs is None:
                    part = np.empty((length, *shape), dtype=stored)
                    reader.read_into(demo, key, part)
                    self._put(key, pos, part)
                    if progress is not None:
                        progress(length)
                else:
                    pending.append((key, demo, pos, length, offs))
                pos += length
        self.frames = need

        def finish() -> None:
            for key, demo, pos, length, offs in pending:
                shape, stored, _ = self.members[key]
                part = np.empty((length, *shape), dtype=stored)
                read_by_offsets(reader, part, offs, f"/data/{demo}/{key}")
                self._put(key, pos, part)
                if progress is not None:
                    progress(length)

        return finish

    def _put(self, key: str, pos: int, part: np.ndarray) -> None:
        served = self.members[key][2]
        raw = np.ascontiguousarray(part, dtype=served).reshape(len(part), -1).view(np.uint8)
        a, b = self.columns[key]
        self._data[pos : pos + len(part), a:b] = raw

    def column(self, key: str) -> PackColumn:
        return PackColumn(self, key)

    def gather_columns(self, plan: BatchPlan, keys) -> dict[str, np.ndarray]:
        """{key: (B, T, ...)} of the windows for member `keys`: views of one gathered block.

        The views are not contiguous (each key's columns of the block's rows); numpy and
        torch handle them as any array, and copying them apart would cost more than the
        take saves.
        """
        win = plan.win
        rows = win.flat_frames
        block = plan.empty((len(rows), self.frame_shape[0]), np.uint8)
        self._data.take(rows, axis=0, out=block, mode="clip")
        records = block.view(self._record).reshape(win.flat.shape)  # (B, T) records
        return {key: records[key] for key in keys}


class PackColumn:
    """One member key of a `RamPack`, used where a single key is read (stats, goals)."""

    cached = True
    nbytes = 0  # the pack counts its bytes once

    def __init__(self, pack: RamPack, key: str):
        self.pack = pack
        self.key = key
        self.frame_shape, _, self.dtype = pack.members[key]

    def append(self, reader, demos, lengths, progress=None):
        return None  # the pack reads its members

    def reserve(self, frames: int, demos: int = 0) -> None:
        pass

    def truncate(self, frames: int, count: int) -> None:
        pass

    def gather_windows(self, plan: BatchPlan) -> np.ndarray:
        return self.pack.gather_columns(plan, [self.key])[self.key]

    def gather_frames(
        self, flat: np.ndarray, demo: np.ndarray, step: np.ndarray, plan: BatchPlan
    ) -> np.ndarray:
        out = plan.empty((len(flat), *self.frame_shape), self.dtype)
        rows = self.pack._data.take(flat, axis=0, mode="clip")
        out[...] = self.pack.typed(rows, self.key)
        return out

    def demo_arrays(self, reader, demos, lengths, starts):
        data = self.pack._data
        for start, length in zip(starts, lengths):
            yield self.pack.typed(data[int(start) : int(start) + int(length)], self.key)
