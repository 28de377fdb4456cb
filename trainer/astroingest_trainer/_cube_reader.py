"""One process's view of a cube: the pinned snapshot, opened once, its reads counted.

Opened lazily inside each DataLoader worker (never inherited from the parent: Icechunk's
runtime does not survive a fork), and only for the snapshot the parent pinned, so every
worker and rank reads the same version. The reads go through zarr's async API on the
process's one event loop (``_storeio``), every variable of a block at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any

import numpy as np
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from astroingest.cubes import CubeLocation, read_manifest
from astroingest_trainer import _storeio


class CountingStore(WrapperStore[Store]):
    """Counts the objects fetched from the cube's store, per key, and their bytes."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.fetches: Counter[str] = Counter()
        self.bytes = 0

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        buffer = await self._store.get(key, prototype, byte_range)
        self.fetches[key] += 1
        self.bytes += len(buffer) if buffer is not None else 0
        return buffer

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(
            await asyncio.gather(*(self.get(key, prototype, rng) for key, rng in key_ranges))
        )

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


class CubeReader:
    def __init__(self, location: CubeLocation, snapshot: str) -> None:
        import zarr.api.asynchronous

        _, session = read_manifest(location, snapshot=snapshot)
        self.store = CountingStore(session.store)
        self.group = _storeio.run(zarr.api.asynchronous.open_group(self.store, mode="r"))
        self._arrays: dict[str, Any] = {}

    def rows(self, names: Sequence[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` along the sample dimension of each variable, read at once."""
        return _storeio.run(self._rows(names, start, stop))

    async def _rows(self, names: Sequence[str], start: int, stop: int) -> dict[str, np.ndarray]:
        arrays = [await self._array(name) for name in names]
        found = await asyncio.gather(*(a.getitem(slice(start, stop)) for a in arrays))
        return {name: np.asarray(data) for name, data in zip(names, found, strict=True)}

    async def _array(self, name: str) -> Any:
        array = self._arrays.get(name)
        if array is None:
            array = self._arrays[name] = await self.group.getitem(name)
        return array


_opening = threading.Lock()
_readers: dict[tuple[int, CubeLocation, str], CubeReader] = {}


def reader_for(location: CubeLocation, snapshot: str) -> CubeReader:
    """This process's reader of one cube snapshot (opened on first use)."""
    key = (os.getpid(), location, snapshot)
    with _opening:  # prefetch threads ask at once: open it once
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = CubeReader(location, snapshot)
    return reader
