"""The ``grid`` converter: gridded NetCDF4/HDF5 (ERA5 and the like) into one cube.

Variables on (time, latitude, longitude[, level]) become arrays with the sample
dimension first; their CF attributes (units, long_name, standard_name) are kept, and
the time coordinate is stored as the file encodes it (numbers with ``units`` and
``calendar``), which xarray decodes on reading. Time steps already in the cube are left
out, so the same file twice, or two files that overlap, change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from astroingest.cubes._converters import ConverterType, ConvertInput
from astroingest.cubes._writer import BATCH_BYTES, Array, Batch, CubeError, CubeWriter

# Encoding details xarray has already applied (mask and scale): not attributes of the data.
_ENCODING_ATTRS = frozenset(
    {"_FillValue", "missing_value", "scale_factor", "add_offset", "dtype", "_Unsigned"}
)


def convert(item: ConvertInput, writer: CubeWriter) -> None:
    import xarray as xr

    dim = writer.layout.sample_dim
    try:
        dataset = xr.open_dataset(
            item.path, engine="h5netcdf", decode_times=False, mask_and_scale=True, cache=False
        )
    except (OSError, ValueError) as error:
        raise CubeError(f"{item.name}: not a readable NetCDF4/HDF5 file ({error})") from None
    with dataset:
        if dim not in dataset.dims:
            raise CubeError(
                f"{item.name}: no {dim!r} dimension (it has {', '.join(map(str, dataset.dims))}"
                "; set sample_dim in the cube's table)"
            )
        names = _variables(item, dataset, dim)
        step = _steps_per_batch(dataset, names, dim)
        for start in range(0, dataset.sizes[dim], step):
            part = dataset.isel({dim: slice(start, start + step)})
            writer.append(_batch(part, names, dim))


def _variables(item: ConvertInput, dataset: Any, dim: str) -> list[str]:
    wanted = item.spec.variables
    if wanted is None:
        found = [str(n) for n in dataset.data_vars if dim in dataset[n].dims]
        if not found:
            raise CubeError(f"{item.name}: no variable on the {dim!r} dimension")
        return sorted(found)
    missing = [n for n in wanted if n not in dataset.data_vars]
    if missing:
        have = ", ".join(sorted(map(str, dataset.data_vars)))
        raise CubeError(f"{item.name}: no variable {missing[0]!r} (has {have})")
    off = [n for n in wanted if dim not in dataset[n].dims]
    if off:
        raise CubeError(f"{item.name}: variable {off[0]!r} is not on the {dim!r} dimension")
    return list(wanted)


def _steps_per_batch(dataset: Any, names: list[str], dim: str) -> int:
    """About BATCH_BYTES of steps per variable in memory at a time."""
    per_step = max(
        dataset[n].dtype.itemsize * math.prod(s for d, s in dataset[n].sizes.items() if d != dim)
        for n in names
    )
    return max(1, BATCH_BYTES // max(int(per_step), 1))


def _batch(part: Any, names: list[str], dim: str) -> Batch:
    variables: dict[str, Array] = {}
    used: set[str] = set()
    for name in names:
        data = part[name].transpose(dim, ...)
        variables[name] = Array(tuple(map(str, data.dims)), data.values, _attrs(data.attrs))
        used.update(map(str, data.dims))
    coords = {
        d: Array((d,), part[d].values, _attrs(part[d].attrs))
        for d in sorted(used)
        if d in part.coords
    }
    return Batch(variables, coords)


def _attrs(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    """CF attributes as JSON values (numpy scalars and arrays turned into plain ones)."""
    kept: dict[str, Any] = {}
    for key, value in attrs.items():
        if str(key) in _ENCODING_ATTRS:
            continue
        if hasattr(value, "tolist"):
            value = value.tolist()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if isinstance(value, str | int | float | bool | list):
            kept[str(key)] = value
    return kept


def first_step(path: Path) -> Any:
    """Where a file starts in time: grid inputs are converted in this order."""
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="h5netcdf", decode_times=False, cache=False) as data:
            for name in ("time", "valid_time"):
                if name in data.coords and data.sizes[name]:
                    return data[name].values[0].item()
    except (OSError, ValueError):
        pass  # an unreadable file sorts last; converting it reports the problem
    return float("inf")


GRID = ConverterType(
    "grid",
    convert,
    extensions=(".nc", ".nc4", ".netcdf", ".h5", ".hdf5", ".he5"),
    sample_dim="time",
    description="gridded NetCDF4/HDF5 (ERA5…): variables on (time, lat, lon[, level])",
    order=first_step,
)
