"""Writing one cube version: arrays appended along the sample dimension, then one commit.

A converter hands the writer batches (numpy arrays with dimension names); the writer
creates or grows the Zarr v3 arrays in an Icechunk session, keeps each variable's
statistics in one streaming pass, and on ``commit`` writes the training manifest into
the same snapshot. Until then nothing is visible to readers; an exception, a kill or a
Ctrl-C before the commit leaves the previous version as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from astroingest import _version
from astroingest._exceptions import AstroingestError
from astroingest._report import now_iso
from astroingest.cubes._manifest import ATTRIBUTE, Samples, TrainingManifest, VariableInfo
from astroingest.cubes._repo import CubeLocation, commit_lock, open_repository
from astroingest.cubes._stats import Stats

MiB = 1024 * 1024
TARGET_CHUNK = 4 * MiB  # training reads whole chunks: 1-16 MiB keeps S3 requests efficient
MAX_CHUNK = 16 * MiB
# What a converter hands over per append: 16 chunks that zarr writes concurrently (on S3
# latency, not bandwidth, limits one chunk at a time), and what bounds memory.
BATCH_BYTES = 16 * TARGET_CHUNK


class CubeError(AstroingestError):
    """A converter's data does not fit the cube (a grid changed shape, a dtype changed)."""


class OutOfOrder(CubeError):
    """Steps earlier than the cube's last one: the cube must be rebuilt in order."""


@dataclass(frozen=True, slots=True)
class Array:
    """One named array of a batch: dimension names, data, attributes (units, long_name…)."""

    dims: tuple[str, ...]
    data: Any  # numpy.ndarray
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Batch:
    """Data variables and coordinates. Arrays on the sample dimension have it first."""

    variables: Mapping[str, Array]
    coords: Mapping[str, Array] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Layout:
    """Chunking and compression, from a ``[cubes.NAME]`` table."""

    sample_dim: str
    chunks: Mapping[str, int] = field(default_factory=dict)
    shards: Mapping[str, int] = field(default_factory=dict)
    codec: str = "zstd"  # or "blosc"
    level: int = 3
    window: int = 1
    stride: int = 1
    grows: tuple[str, ...] = ()  # other dimensions arrays grow along (a flat residue array)
    ordered: bool = False  # the sample coordinate only increases (time)


def chunk_shape(
    dims: tuple[str, ...], shape: tuple[int, ...], itemsize: int, layout: Layout
) -> tuple[int, ...]:
    """Configured sizes where given; otherwise whole extents off the sample dimension (split
    at 512 when a sample would pass 16 MiB) and as many samples as make about 4 MiB."""
    sizes: dict[str, int] = {}
    for dim, extent in zip(dims, shape, strict=True):
        if dim in layout.chunks:
            sizes[dim] = max(1, min(layout.chunks[dim], max(extent, 1)))
        elif dim != layout.sample_dim:
            sizes[dim] = max(extent, 1)
    per_sample = itemsize * math.prod(sizes[d] for d in dims if d != layout.sample_dim)
    if per_sample > MAX_CHUNK:
        for dim in dims:
            if dim != layout.sample_dim and dim not in layout.chunks:
                sizes[dim] = min(sizes[dim], 512)
        per_sample = itemsize * math.prod(sizes[d] for d in dims if d != layout.sample_dim)
    if layout.sample_dim in dims and layout.sample_dim not in layout.chunks:
        sizes[layout.sample_dim] = max(1, TARGET_CHUNK // max(per_sample, 1))
    return tuple(sizes[d] for d in dims)


def _compressors(layout: Layout) -> list[Any]:
    from zarr.codecs import BloscCodec, ZstdCodec

    if layout.codec == "blosc":
        return [BloscCodec(cname="zstd", clevel=layout.level, shuffle="shuffle")]
    return [ZstdCodec(level=layout.level)]


class CubeWriter:
    """Use as a context manager: ``append`` batches, then ``commit``; leaving the block
    without a commit discards everything written in it."""

    def __init__(self, location: CubeLocation, name: str, converter: str, layout: Layout) -> None:
        self.location = location
        self.name = name
        self.converter = converter
        self.layout = layout
        self.previous: TrainingManifest | None = None
        self.stats: dict[str, Stats] = {}
        self.appended = 0
        self._lock = commit_lock(location)
        self._session: Any = None
        self._group: Any = None
        self._seen: set[Any] | None = None
        self.rebuilt = False

    def __enter__(self) -> CubeWriter:
        import zarr

        self._lock.__enter__()
        try:
            repo = open_repository(self.location, create=True)
            self._session = repo.writable_session("main")
            self._group = zarr.open_group(self._session.store, mode="a")
            document = self._group.attrs.get(ATTRIBUTE)
            if isinstance(document, dict):
                self.previous = TrainingManifest.from_dict(document)
                self.stats = {k: v.stats for k, v in self.previous.variables.items()}
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._session = self._group = None  # uncommitted changes are dropped with it
        self._lock.__exit__(kind, error, trace)

    @property
    def length(self) -> int:
        """Current length along the sample dimension."""
        return self.length_of(self.layout.sample_dim)

    def length_of(self, dim: str) -> int:
        """Current length along ``dim`` (the sample dimension or one of ``layout.grows``)."""
        for _, array in self._group.arrays():
            dims = tuple(array.metadata.dimension_names or ())
            if dims and dims[0] == dim:
                return int(array.shape[0])
        return 0

    def clear(self) -> None:
        """Start the cube afresh in this session (an input changed: rebuild from all)."""
        for name in list(self._group.array_keys()):
            del self._group[name]
        self.stats = {}
        self._seen = None
        self.appended = 0
        self.rebuilt = True

    def existing_coordinate(self) -> set[Any]:
        """The sample coordinate's values already in the cube (for idempotent appends)."""
        if self._seen is None:
            name = self.layout.sample_dim
            self._seen = set(self._group[name][:].tolist()) if name in self._group else set()
        return self._seen

    def append(self, batch: Batch) -> int:
        """Add a batch along the sample dimension; rows whose sample coordinate is already in
        the cube are left out. Returns how many rows were added."""
        import numpy as np

        keep = self._new_rows(batch)
        if keep is not None and not keep.any():
            return 0
        if self.layout.ordered:
            self._check_order(batch, keep)
        growing = (self.layout.sample_dim, *self.layout.grows)
        starts = {dim: self.length_of(dim) for dim in growing}
        added = 0
        for name, array in {**batch.coords, **batch.variables}.items():
            data = np.asarray(array.data)
            grows_along = array.dims[0] if array.dims and array.dims[0] in growing else None
            if grows_along == self.layout.sample_dim and keep is not None:
                data = data[keep]
            if grows_along is None:
                self._fixed(name, array, data)
            else:
                self._grow(name, array, data, starts[grows_along])
                if grows_along == self.layout.sample_dim:
                    added = data.shape[0]
            if name in batch.variables and data.dtype.kind in "fiub":
                self.stats[name] = self.stats.get(name, Stats()).merge(Stats.of(data))
        if self._seen is not None and self.layout.sample_dim in batch.coords:
            start = starts[self.layout.sample_dim]
            self._seen.update(np.asarray(self._group[self.layout.sample_dim][start:]).tolist())
        self.appended += added
        return added

    def _check_order(self, batch: Batch, keep: Any) -> None:
        import numpy as np

        coordinate = batch.coords.get(self.layout.sample_dim)
        if coordinate is None:
            return
        values = np.asarray(coordinate.data)
        if keep is not None:
            values = values[keep]
        if values.size > 1 and not (np.diff(values) > 0).all():
            raise CubeError(f"cube {self.name}: {self.layout.sample_dim} does not increase")
        seen = self.existing_coordinate()
        if seen and values.size and values[0] <= max(seen):
            raise OutOfOrder(
                f"cube {self.name}: steps before the cube's last {self.layout.sample_dim}"
            )

    def _new_rows(self, batch: Batch) -> Any:
        import numpy as np

        coordinate = batch.coords.get(self.layout.sample_dim)
        if coordinate is None:
            return None
        seen = self.existing_coordinate()
        if not seen:
            return None
        return np.array([value not in seen for value in np.asarray(coordinate.data).tolist()])

    def _create(self, name: str, array: Array, data: Any, shape: tuple[int, ...]) -> Any:
        import numpy as np

        chunks = chunk_shape(array.dims, data.shape, data.dtype.itemsize, self.layout)
        shards = None
        if self.layout.shards:
            shards = tuple(
                max(c, self.layout.shards.get(d, c)) // c * c
                for d, c in zip(array.dims, chunks, strict=True)
            )
        if data.dtype.kind == "f":
            fill: Any = np.nan
        elif data.dtype.kind in "OUT":
            fill = ""
        else:
            fill = 0
        dtype: Any = str if data.dtype.kind in "OUT" else data.dtype
        return self._group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            shards=shards,
            dtype=dtype,
            fill_value=fill,
            dimension_names=array.dims,
            compressors=_compressors(self.layout) if dtype is not str else "auto",
            attributes=dict(array.attrs),
        )

    def _grow(self, name: str, array: Array, data: Any, start: int) -> None:
        if name not in self._group:
            if start:
                raise CubeError(
                    f"cube {self.name}: variable {name!r} is not in the cube's earlier inputs"
                )
            target = self._create(name, array, data, (0, *data.shape[1:]))
        else:
            target = self._group[name]
            if tuple(target.shape[1:]) != tuple(data.shape[1:]):
                raise CubeError(
                    f"cube {self.name}: {name!r} has shape {tuple(data.shape[1:])} per sample "
                    f"in this input, {tuple(target.shape[1:])} in the cube"
                )
        if target.shape[0] != start:
            raise CubeError(
                f"cube {self.name}: {name!r} lacks samples that other variables have "
                "(every input must carry every variable)"
            )
        target.resize((start + data.shape[0], *data.shape[1:]))
        target[start:] = data if data.dtype.kind not in "OUT" else data.astype(str)

    def _fixed(self, name: str, array: Array, data: Any) -> None:
        import numpy as np

        if name not in self._group:
            target = self._create(name, array, data, data.shape)
            target[...] = data if data.dtype.kind not in "OUT" else data.astype(str)
            return
        existing = self._group[name][...]
        if existing.shape != data.shape or not np.array_equal(
            existing, data, equal_nan=data.dtype.kind == "f"
        ):
            raise CubeError(
                f"cube {self.name}: coordinate {name!r} differs from the cube's "
                "(a different grid cannot be appended)"
            )

    def commit(
        self, inputs: Mapping[str, str], provenance: Mapping[str, Any]
    ) -> TrainingManifest | None:
        """Write the manifest and commit; None when nothing changed (no new version)."""
        previous_inputs = self.previous.inputs if self.previous else {}
        all_inputs = dict(inputs) if self.rebuilt else {**previous_inputs, **inputs}
        if not self.rebuilt and not self.appended and all_inputs == previous_inputs:
            return None
        manifest = self._manifest(all_inputs, provenance)
        self._group.attrs[ATTRIBUTE] = manifest.as_dict()
        # No zarr.consolidate_metadata: Icechunk refuses it, and needs none; a snapshot
        # already holds the whole hierarchy's metadata, read in one request.
        self._session.commit(
            f"{self.name} v{manifest.version}: {self.appended} new samples",
            metadata={
                "astroingest_version": _version.__version__,
                "cube_version": manifest.version,
            },
        )
        return manifest

    def _manifest(
        self, inputs: Mapping[str, str], provenance: Mapping[str, Any]
    ) -> TrainingManifest:
        variables: dict[str, VariableInfo] = {}
        for name, stats in self.stats.items():
            array = self._group[name]
            variables[name] = VariableInfo(
                tuple(array.metadata.dimension_names or ()),
                tuple(int(n) for n in array.shape),
                str(array.dtype),
                tuple(int(n) for n in array.chunks),
                stats,
                {k: v for k, v in array.attrs.items() if k != ATTRIBUTE},
            )
        samples = Samples.along(
            self.layout.sample_dim, self.length, self.layout.window, self.layout.stride
        )
        return TrainingManifest(
            self.name,
            self.converter,
            (self.previous.version if self.previous else 0) + 1,
            samples,
            variables,
            now_iso(),
            dict(inputs),
            {"software": f"astroingest {_version.__version__}", **provenance},
        )
