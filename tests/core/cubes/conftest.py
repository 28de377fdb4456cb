"""Cube test helpers: ERA5-shaped NetCDF4 files, written for real with xarray + h5netcdf."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def era5_like(path: Path, hours: range, *, seed: int = 0, lat: int = 9, lon: int = 12) -> Any:
    """A small NetCDF4 file shaped like a CDS ERA5 single-levels download.

    Variables t2m, q, tcc on (time, latitude, longitude), CF attributes as ERA5 has them,
    time as hours since 1900-01-01, float32 packed the way xarray writes it.
    """
    import xarray as xr

    rng = np.random.default_rng(seed + hours.start)
    shape = (len(hours), lat, lon)
    t2m = (270 + 20 * rng.random(shape)).astype("float32")
    t2m[0, 0, 0] = np.nan  # ERA5 land-sea gaps: NaN after masking
    data = xr.Dataset(
        {
            "t2m": (
                ("time", "latitude", "longitude"),
                t2m,
                {
                    "units": "K",
                    "long_name": "2 metre temperature",
                    "standard_name": "air_temperature",
                },
            ),
            "q": (
                ("time", "latitude", "longitude"),
                (rng.random(shape) * 0.02).astype("float32"),
                {"units": "kg kg**-1", "long_name": "Specific humidity"},
            ),
            "tcc": (
                ("time", "latitude", "longitude"),
                rng.random(shape).astype("float32"),
                {"units": "(0 - 1)", "long_name": "Total cloud cover"},
            ),
        },
        coords={
            "time": (
                "time",
                np.array(list(hours), dtype="int64") + 1_000_000,
                {
                    "units": "hours since 1900-01-01 00:00:00.0",
                    "calendar": "gregorian",
                    "long_name": "time",
                },
            ),
            "latitude": (
                "latitude",
                np.linspace(60, 50, lat).astype("float32"),
                {"units": "degrees_north"},
            ),
            "longitude": (
                "longitude",
                np.linspace(0, 11, lon).astype("float32"),
                {"units": "degrees_east"},
            ),
        },
        attrs={"Conventions": "CF-1.6", "history": "test file shaped like ERA5"},
    )
    data.to_netcdf(path, engine="h5netcdf")
    return data
