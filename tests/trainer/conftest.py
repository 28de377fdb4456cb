"""Small cubes for the trainer's tests, written with the real CubeWriter."""

from __future__ import annotations

import numpy as np
import pytest

from astroingest.cubes import Array, Batch, CubeLocation, CubeWriter, Layout, TrainingManifest


def make_cube(
    url: str,
    *,
    times: int = 48,
    chunk: int = 4,
    lat: int = 4,
    lon: int = 8,
    window: int = 1,
    stride: int = 1,
    endpoint_url: str | None = None,
) -> TrainingManifest:
    """A climate-like cube: ``t2m`` follows from ``q`` and ``tcc``; ``index`` holds each
    row's number, so a test can tell which rows a sample came from."""
    location = CubeLocation(url, endpoint_url=endpoint_url)
    rng = np.random.default_rng(0)
    t = np.arange(times, dtype="int64")
    phase = t[:, None, None] / 10
    la = np.linspace(-1, 1, lat)[None, :, None]
    lo = np.linspace(0, 2 * np.pi, lon, endpoint=False)[None, None, :]
    noise = 0.1 * rng.standard_normal((2, times, lat, lon))
    q = (np.sin(lo + phase) * np.cos(la) + noise[0]).astype("f4")
    tcc = (np.cos(2 * lo - phase) * la + noise[1]).astype("f4")
    t2m = (280 + 10 * q - 5 * tcc + 3 * la).astype("f4")
    index = np.broadcast_to(t[:, None, None], (times, lat, lon)).astype("f4")
    grid = ("time", "lat", "lon")
    batch = Batch(
        {
            "t2m": Array(grid, t2m, {"units": "K"}),
            "q": Array(grid, q, {"units": "kg kg-1"}),
            "tcc": Array(grid, tcc),
            "index": Array(grid, index),
        },
        {
            "time": Array(("time",), t, {"units": "hours since 2000-01-01"}),
            "lat": Array(("lat",), np.linspace(-1, 1, lat)),
            "lon": Array(("lon",), lo.ravel()),
        },
    )
    layout = Layout("time", chunks={"time": chunk}, window=window, stride=stride)
    with CubeWriter(location, "era5", "grid", layout) as writer:
        writer.append(batch)
        manifest = writer.commit({"era5/x.nc": "0" * 64}, {"run": "test"})
    assert manifest is not None
    return manifest


@pytest.fixture(scope="module")
def cube_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """48 hourly samples in 12 chunks of 4 along time, on a 4 x 8 grid."""
    url = (tmp_path_factory.mktemp("cubes") / "era5").as_uri()
    make_cube(url)
    return url
