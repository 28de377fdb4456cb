"""The cube writer: Icechunk commits, manifests, idempotent appends, killed writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from astroingest.cubes import (
    Array,
    Batch,
    CubeError,
    CubeLocation,
    CubeWriter,
    Layout,
    chunk_shape,
    open_repository,
    read_manifest,
)

REPO = Path(__file__).resolve().parents[3]


def batch(start: int, count: int, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed + start)
    t2m = (250 + 50 * rng.random((count, 4, 6))).astype("float32")
    return Batch(
        {"t2m": Array(("time", "lat", "lon"), t2m, {"units": "K"})},
        {
            "time": Array(
                ("time",),
                np.arange(start, start + count, dtype="int64"),
                {"units": "hours since 1900-01-01"},
            ),
            "lat": Array(("lat",), np.arange(4.0)),
            "lon": Array(("lon",), np.arange(6.0)),
        },
    )


@pytest.fixture
def location(tmp_path: Path) -> CubeLocation:
    return CubeLocation((tmp_path / "cubes" / "era5").as_uri())


def write(location: CubeLocation, *batches: Batch, inputs: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    with CubeWriter(location, "era5", "grid", Layout("time", chunks={"time": 4})) as writer:
        for b in batches:
            writer.append(b)
        return writer.commit(inputs or {f"in/{id(batches)}": "sha"}, {"run_id": "r"})


def test_manifest_statistics_match_numpy_over_the_whole_cube(location: CubeLocation) -> None:
    first = write(location, batch(0, 5), batch(5, 3), inputs={"a.nc": "1"})
    assert first is not None and first.version == 1
    second = write(location, batch(8, 6), inputs={"b.nc": "2"})
    assert second is not None and second.version == 2

    manifest, session = read_manifest(location)
    import zarr

    data = zarr.open_group(session.store, mode="r")["t2m"][:].astype("float64")
    stats = manifest.variables["t2m"].stats
    assert data.shape == (14, 4, 6) == manifest.variables["t2m"].shape
    assert stats.count == data.size
    assert stats.mean == pytest.approx(data.mean(), rel=1e-9)
    assert stats.std == pytest.approx(data.std(), rel=1e-9)
    assert (stats.min, stats.max) == (data.min(), data.max())
    assert manifest.samples.count == 14 and manifest.samples.dim == "time"
    assert manifest.variables["t2m"].chunks == (4, 4, 6)
    assert manifest.variables["t2m"].attrs["units"] == "K"
    assert manifest.inputs == {"a.nc": "1", "b.nc": "2"}


def test_the_same_steps_twice_change_nothing(location: CubeLocation) -> None:
    write(location, batch(0, 6), inputs={"a.nc": "1"})
    assert write(location, batch(0, 6), inputs={"a.nc": "1"}) is None  # no new version
    overlapping = write(location, batch(3, 6), inputs={"b.nc": "2"})
    assert overlapping is not None and overlapping.samples.count == 9
    repo = open_repository(location)
    commits = [c.message for c in repo.ancestry(branch="main")]
    assert len(commits) == 3  # initial + two versions


def test_every_version_stays_readable(location: CubeLocation) -> None:
    write(location, batch(0, 4), inputs={"a.nc": "1"})
    write(location, batch(4, 4), inputs={"b.nc": "2"})
    repo = open_repository(location)
    snapshots = [c.id for c in repo.ancestry(branch="main")]
    old, _ = read_manifest(location, snapshot=snapshots[1])
    new, _ = read_manifest(location)
    assert (old.version, old.samples.count) == (1, 4)
    assert (new.version, new.samples.count) == (2, 8)


def test_a_writer_killed_before_commit_leaves_the_last_version_whole(
    location: CubeLocation,
) -> None:
    write(location, batch(0, 4), inputs={"a.nc": "1"})
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from astroingest.cubes import Array, Batch, CubeLocation, CubeWriter, Layout
        loc = CubeLocation({location.url!r})
        with CubeWriter(loc, "era5", "grid", Layout("time", chunks={{"time": 4}})) as w:
            w.append(Batch({{"t2m": Array(("time", "lat", "lon"), np.zeros((40, 4, 6), "float32"))}},
                           {{"time": Array(("time",), np.arange(100, 140)),
                             "lat": Array(("lat",), np.arange(4.0)),
                             "lon": Array(("lon",), np.arange(6.0))}}))
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, check=False
    )
    assert killed.returncode == -9, killed.stderr
    manifest, session = read_manifest(location)
    import zarr

    assert manifest.version == 1
    assert zarr.open_group(session.store, mode="r")["t2m"].shape == (4, 4, 6)
    after = write(location, batch(4, 2), inputs={"b.nc": "2"})  # the lock died with it
    assert after is not None and after.version == 2 and after.samples.count == 6


def test_xarray_opens_the_cube_and_decodes_time(location: CubeLocation) -> None:
    import xarray as xr

    write(location, batch(0, 5), inputs={"a.nc": "1"})
    _, session = read_manifest(location)
    data = xr.open_zarr(session.store, consolidated=False)
    assert data["t2m"].dims == ("time", "lat", "lon")
    assert np.issubdtype(data["time"].dtype, np.datetime64)
    assert data["t2m"].attrs["units"] == "K"


def test_a_different_grid_is_refused(location: CubeLocation) -> None:
    write(location, batch(0, 4), inputs={"a.nc": "1"})
    other = Batch(
        {"t2m": Array(("time", "lat", "lon"), np.zeros((2, 4, 6), "float32"))},
        {
            "time": Array(("time",), np.arange(50, 52)),
            "lat": Array(("lat",), np.arange(4.0) + 1),
            "lon": Array(("lon",), np.arange(6.0)),
        },
    )
    with pytest.raises(CubeError, match="coordinate 'lat' differs"):
        write(location, other, inputs={"b.nc": "2"})
    assert read_manifest(location)[0].version == 1


def test_default_chunks_hold_a_few_mib_of_whole_samples() -> None:
    era5 = chunk_shape(("time", "latitude", "longitude"), (8760, 721, 1440), 4, Layout("time"))
    assert era5 == (1, 721, 1440)  # one global field (4 MB) per chunk: whole samples
    huge = chunk_shape(("time", "y", "x"), (100, 2000, 3000), 4, Layout("time"))
    assert huge[1:] == (512, 512)  # a 24 MB sample would pass 16 MiB: split
    assert 1 <= huge[0] * 512 * 512 * 4 / 2**20 <= 16
    small = chunk_shape(("time", "lat", "lon"), (1000, 64, 64), 4, Layout("time"))
    assert small[1:] == (64, 64) and small[0] * 64 * 64 * 4 == 4 * 2**20
