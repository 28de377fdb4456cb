"""``StoreFilesDataset``: the ``.pt``, ``.pth``, ``.npz`` and ``.npy`` objects under a store
prefix, one sample each, with the same sharding, shuffle, cache and resume as the cubes.

The listing is taken once, when the dataset is made, and travels to the workers with it:
every rank and worker sees the same objects even while new ones land. An item is
``{"key": key, "data": tensor (.npy, .pt of a tensor) | dict of tensors (.npz) | what
the .pt holds, "sample": index, "progress": Progress}``. ``.pt``/``.pth`` objects are
loaded with ``weights_only=True``: tensors and plain containers, never arbitrary code.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from astroingest_trainer import _storeio
from astroingest_trainer._cache import CacheSettings, CacheStats, process_cache
from astroingest_trainer._sharding import Blocks
from astroingest_trainer._stream import StreamDataset

EXTENSIONS = (".pt", ".pth", ".npz", ".npy")


@dataclass(frozen=True, slots=True)
class FileSample:
    key: str
    data: Any


class StoreFilesDataset(StreamDataset[FileSample]):
    def __init__(
        self,
        url: str,
        prefix: str = "",
        *,
        options: Mapping[str, Any] | None = None,
        extensions: Sequence[str] = EXTENSIONS,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        epochs: int | None = 1,
        cache: CacheSettings | None = None,
        prefetch: int = 4,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=None,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            epochs=epochs,
            prefetch=prefetch,
            rank=rank,
            world_size=world_size,
        )
        self.url = url
        self.options = dict(options or {})
        self.cache = cache
        unknown = [e for e in extensions if e not in EXTENSIONS]
        if unknown:
            raise ValueError(f"cannot load {', '.join(unknown)} objects (only {EXTENSIONS})")
        store = _storeio.open_store(url, self.options)
        self.objects: tuple[tuple[str, int], ...] = tuple(
            (info.key, info.size)
            for info in _storeio.list_objects(store, prefix)
            if info.key.endswith(tuple(extensions))
        )
        count = len(self.objects)
        self.blocks = Blocks(tuple(range(count)), tuple(range(1, count + 1)))

    def fingerprint(self) -> str:
        text = "|".join([self.url, *(f"{key}:{size}" for key, size in self.objects)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def start_method(self) -> str:
        # The local store is plain files: fork is safe and starts workers fastest.
        return "fork" if self.url.startswith("file://") else "spawn"

    def read_block(self, block: int) -> FileSample:
        key, size = self.objects[block]
        return FileSample(key, load_object(key, self._fetch(key, size)))

    def _fetch(self, key: str, size: int) -> bytes:
        cache = process_cache(self.cache) if self.cache else None
        name = f"{self.url}/{key}:{size}"  # objects are taken as immutable at a given size
        data = cache.get(name) if cache else None
        if data is None:
            data = _storeio.read_bytes(_storeio.open_store(self.url, self.options), key)
            if cache:
                cache.put(name, data)
        return data

    def emit(self, pieces: Sequence[tuple[FileSample, np.ndarray]]) -> dict[str, Any]:
        [(sample, _)] = pieces
        return {"key": sample.key, "data": sample.data}

    def cache_stats(self) -> CacheStats | None:
        """This process's cache counters."""
        return process_cache(self.cache).stats if self.cache else None


def load_object(key: str, data: bytes) -> Any:
    """A tensor, a dict of tensors (.npz), or what a .pt holds (tensors and containers)."""
    try:
        if key.endswith(".npy"):
            return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
        if key.endswith(".npz"):
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                return {name: torch.from_numpy(archive[name]) for name in archive.files}
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot load {key}: {error}") from error
