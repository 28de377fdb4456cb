"""``ZarrCubeDataset``: a cube's samples as batches of tensors, driven by its training manifest.

A sample is one window along the cube's sample dimension (``manifest.samples``); an item
is a batch of them: ``{variable: tensor[batch, window, *rest], "sample": indices,
"progress": Progress}``, normalised with the manifest's statistics. Samples are read a
block at a time: the windows that start in one chunk-aligned run of rows (the least
common multiple of the variables' chunk lengths along the sample dimension), read whole.
With ``window > 1`` a block's last windows reach into the next chunk, which is then read
twice in an epoch.

The optional disk cache keeps each block of each variable decoded and normalised (raw
float32, about the cube's uncompressed size): later epochs neither fetch nor decompress,
which matters as much on a pod with few CPU cores per GPU as the saved S3 requests do.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import get_worker_info

from astroingest.cubes import CubeLocation, TrainingManifest, read_manifest
from astroingest_trainer._cache import CacheSettings, CacheStats, process_cache
from astroingest_trainer._cube_reader import reader_for
from astroingest_trainer._sharding import Blocks
from astroingest_trainer._stream import SAMPLE, StreamDataset

Split = Literal["all", "train", "val"]


@dataclass(frozen=True, slots=True)
class CubeBlock:
    """The rows of one block, normalised: ``arrays[name]`` starts at row ``first_row``."""

    first_row: int
    arrays: dict[str, np.ndarray]


class ZarrCubeDataset(StreamDataset[CubeBlock]):
    """Batches of a cube's samples for training.

    ``split`` keeps all blocks, or the first (``"train"``) or last (``"val"``)
    ``val_fraction`` of them in sample order (a held-out tail: no leakage between
    neighbouring time steps). ``epochs=None`` streams epoch after epoch without end.
    Iterate it through ``StreamLoader`` (or call ``advance`` with each item's
    ``"progress"``) for ``state_dict`` to know what was consumed.
    """

    def __init__(
        self,
        cube: str | CubeLocation,
        variables: Sequence[str] | None = None,
        *,
        snapshot: str | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        epochs: int | None = 1,
        split: Split = "all",
        val_fraction: float = 0.0,
        normalize: bool = True,
        fill_nan: float | None = 0.0,
        cache: CacheSettings | None = None,
        prefetch: int = 2,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            epochs=epochs,
            prefetch=prefetch,
            rank=rank,
            world_size=world_size,
        )
        self.location = cube if isinstance(cube, CubeLocation) else CubeLocation(cube)
        manifest, session = read_manifest(self.location, snapshot=snapshot)
        self.manifest: TrainingManifest = manifest
        self.snapshot: str = snapshot or str(session.snapshot_id)
        self.variables = tuple(variables) if variables else sample_variables(manifest)
        self.normalize = normalize
        self.fill_nan = fill_nan
        self.cache = cache
        self.split = split
        self.val_fraction = val_fraction
        self.block_rows = block_rows(manifest, self.variables)
        self.blocks = split_blocks(cube_blocks(manifest, self.block_rows), split, val_fraction)

    def fingerprint(self) -> str:
        text = "|".join(
            [self.location.url, self.snapshot, ",".join(self.variables), str(self.block_rows)]
            + [f"{a}-{b}" for a, b in zip(self.blocks.starts, self.blocks.stops, strict=True)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def samples(self) -> int:
        """Samples in this split (one epoch)."""
        return self.blocks.samples

    def read_block(self, block: int) -> CubeBlock:
        samples = self.manifest.samples
        first, last = self.blocks.starts[block], self.blocks.stops[block] - 1
        start, stop = samples.bounds(first)[0], samples.bounds(last)[1]
        cache = process_cache(self.cache) if self.cache else None
        arrays: dict[str, np.ndarray] = {}
        for name in self.variables:
            cached = cache.get(self._cache_key(name, start, stop)) if cache else None
            if cached is not None:
                grid = self.manifest.variables[name].shape[1:]
                arrays[name] = np.frombuffer(cached, np.float32).reshape(stop - start, *grid)
        missing = [name for name in self.variables if name not in arrays]
        if missing:
            rows = reader_for(self.location, self.snapshot).rows(missing, start, stop)
            for name in missing:
                arrays[name] = self._prepare(name, rows[name])
                if cache:
                    cache.put(self._cache_key(name, start, stop), arrays[name].data)
        return CubeBlock(start, arrays)

    def _cache_key(self, name: str, start: int, stop: int) -> str:
        """A block of one variable as this dataset prepares it, in this snapshot."""
        prepared = f"normalize={self.normalize},fill_nan={self.fill_nan}"
        return f"{self.location.url}@{self.snapshot}/{name}/{start}:{stop}/{prepared}"

    def _prepare(self, name: str, rows: np.ndarray) -> np.ndarray:
        # In place where it can: the rows were read for this block alone.
        data = np.asarray(rows, dtype=np.float32)
        stats = self.manifest.variables[name].stats
        if self.normalize:
            std = stats.std if stats.std > 0 and math.isfinite(stats.std) else 1.0
            data -= np.float32(stats.mean)
            data *= np.float32(1.0 / std)
        if self.fill_nan is not None and stats.nan_count:
            np.putmask(data, np.isnan(data), np.float32(self.fill_nan))
        return data

    def emit(self, pieces: Sequence[tuple[CubeBlock, np.ndarray]]) -> dict[str, Any]:
        samples = self.manifest.samples
        window = np.arange(samples.window)
        count = sum(len(indices) for _, indices in pieces)
        grids = {name: pieces[0][0].arrays[name].shape[1:] for name in self.variables}
        indices, batches = _batch_tensors(count, samples.window, grids)
        np.concatenate([i for _, i in pieces], out=indices.numpy())
        for name, batch in batches.items():
            out, at = batch.numpy(), 0
            for block, chosen in pieces:
                rows = (chosen * samples.stride - block.first_row)[:, None] + window
                np.take(block.arrays[name], rows, axis=0, out=out[at : at + len(chosen)])
                at += len(chosen)
        if not self.batch_size:
            return {SAMPLE: indices[0], **{name: b[0] for name, b in batches.items()}}
        return {SAMPLE: indices, **batches}

    def cache_stats(self) -> CacheStats | None:
        """This process's cache counters (hits, misses): what a DataLoader-less run read."""
        return process_cache(self.cache).stats if self.cache else None

    def fetches(self) -> Counter[str]:
        """How often this process fetched each object of the cube (chunks, metadata)."""
        return reader_for(self.location, self.snapshot).store.fetches


def _batch_tensors(
    count: int, window: int, grids: dict[str, tuple[int, ...]]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sample indices and each variable's batch, as views of one buffer: in a
    DataLoader worker one block of shared memory, made there (the DataLoader would
    otherwise copy each tensor into a segment of its own to hand it over; making a
    segment costs far more than filling it)."""
    sizes = {name: count * window * math.prod(grid) for name, grid in grids.items()}
    nbytes = count * 8 + 4 * sum(sizes.values())
    if get_worker_info() is not None:
        storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
    else:
        storage = torch.UntypedStorage(nbytes)  # type: ignore[no-untyped-call]
    indices = _view(storage, torch.int64, 0, (count,))
    batches: dict[str, torch.Tensor] = {}
    offset = count * 2  # in float32 elements, after the int64 indices
    for name, grid in grids.items():
        batches[name] = _view(storage, torch.float32, offset, (count, window, *grid))
        offset += sizes[name]
    return indices, batches


def _view(
    storage: torch.UntypedStorage, dtype: torch.dtype, offset: int, shape: tuple[int, ...]
) -> torch.Tensor:
    """A contiguous tensor of ``shape`` at ``offset`` (in elements of ``dtype``)."""
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    return torch.empty(0, dtype=dtype).set_(storage, offset, shape, strides)


def sample_variables(manifest: TrainingManifest) -> tuple[str, ...]:
    """Every variable on the sample dimension, in manifest order."""
    dim = manifest.samples.dim
    return tuple(n for n, v in manifest.variables.items() if v.dims and v.dims[0] == dim)


def block_rows(manifest: TrainingManifest, variables: Sequence[str]) -> int:
    """Rows per block: a whole number of chunks of every variable along the sample dim."""
    dim = manifest.samples.dim
    rows = 1
    for name in variables:
        info = manifest.variables.get(name)
        if info is None:
            known = ", ".join(sample_variables(manifest))
            raise ValueError(f"cube {manifest.cube} has no variable {name!r} (it has: {known})")
        if not info.dims or info.dims[0] != dim:
            raise ValueError(f"variable {name!r} of cube {manifest.cube} is not along {dim!r}")
        rows = math.lcm(rows, info.chunks[0])
    return rows


def cube_blocks(manifest: TrainingManifest, rows: int) -> Blocks:
    """Windows grouped by the block their first row falls in."""
    samples = manifest.samples
    starts: list[int] = []
    stops: list[int] = []
    first = 0
    while first < samples.count:
        block = first * samples.stride // rows
        # the first window starting in the next block
        after = min(samples.count, -(-(block + 1) * rows // samples.stride))
        starts.append(first)
        stops.append(after)
        first = after
    return Blocks(tuple(starts), tuple(stops))


def split_blocks(blocks: Blocks, split: Split, val_fraction: float) -> Blocks:
    if split == "all":
        return blocks
    if not 0 < val_fraction < 1:
        raise ValueError("a train or val split needs 0 < val_fraction < 1")
    held = max(1, round(len(blocks) * val_fraction))
    if held >= len(blocks):
        raise ValueError(
            f"{len(blocks)} blocks cannot be split with val_fraction {val_fraction}: "
            "the cube needs more chunks along its sample dimension"
        )
    cut = len(blocks) - held
    if split == "train":
        return Blocks(blocks.starts[:cut], blocks.stops[:cut])
    return Blocks(blocks.starts[cut:], blocks.stops[cut:])
