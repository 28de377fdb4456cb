"""`astroingest run --cubes` and `astroingest cube`: raw assets become versioned cubes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astroingest._archive_server import ArchiveServer
from astroingest.cubes import CubeLocation, open_repository, read_manifest
from tests.conftest import run_cli
from tests.core.cubes.conftest import era5_like
from tests.s3server import CREDENTIALS, MotoServer


def netcdf(tmp_path: Path, name: str, hours: range, seed: int = 0) -> bytes:
    path = tmp_path / name
    era5_like(path, hours, seed=seed)
    return path.read_bytes()


def sources(tmp_path: Path, urls: list[str], store: str = "", cubes_extra: str = "") -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(
        f"""
{store}
[defaults]
backoff = 0.05

[sources.era5]
plugin = "http"
urls = {json.dumps(urls)}

[cubes.era5_surface]
from = ["era5"]
converter = "grid"
variables = ["t2m", "q", "tcc"]
chunks = {{ time = 24 }}
{cubes_extra}
"""
    )
    return path


def test_run_then_cube_versions_grow_with_new_inputs_only(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    with ArchiveServer() as archive:
        urls = [
            archive.add("era5/jan.nc", netcdf(files, "jan.nc", range(0, 48))),
            archive.add("era5/feb.nc", netcdf(files, "feb.nc", range(48, 96))),
        ]
        toml = sources(tmp_path, urls)
        first = run_cli(["run", "--sources", str(toml), "--cubes"])
        assert first.returncode == 0, first.stderr
        assert "era5_surface" in first.stdout and "committed" in first.stdout

        location = CubeLocation((tmp_path / "astroingest-data" / "cubes" / "era5_surface").as_uri())
        manifest, session = read_manifest(location)
        assert manifest.version == 1 and manifest.samples.count == 96
        assert set(manifest.inputs) == {"era5/jan.nc", "era5/feb.nc"}
        assert manifest.variables["t2m"].chunks == (24, 9, 12)

        urls.append(archive.add("era5/mar.nc", netcdf(files, "mar.nc", range(96, 120))))
        toml = sources(tmp_path, urls)
        assert run_cli(["run", "--sources", str(toml)]).returncode == 0
        second = run_cli(["cube", "--sources", str(toml)])
        assert second.returncode == 0, second.stderr
        manifest, _ = read_manifest(location)
        assert manifest.version == 2 and manifest.samples.count == 120
        assert "24" in second.stdout  # new samples, from the one new input

        third = run_cli(["cube", "--sources", str(toml)])
        assert third.returncode == 0 and "unchanged" in third.stdout
        assert read_manifest(location)[0].version == 2

        # The archive republishes January with other values: the cube is rebuilt.
        archive.add("era5/jan.nc", netcdf(files, "jan2.nc", range(0, 48), seed=7))
        assert run_cli(["run", "--sources", str(toml)]).returncode == 0
        fourth = run_cli(["cube", "--sources", str(toml)])
        assert fourth.returncode == 0 and "rebuilt" in fourth.stdout
        manifest, session = read_manifest(location)
        assert manifest.version == 3 and manifest.samples.count == 120
        import zarr

        stored = zarr.open_group(session.store, mode="r")["t2m"][:48]
        expected = era5_like(tmp_path / "check.nc", range(0, 48), seed=7)["t2m"].values
        np.testing.assert_array_equal(stored, expected)
        assert len(list(open_repository(location).ancestry(branch="main"))) == 4


def test_a_cube_naming_an_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    toml = sources(tmp_path, ["http://127.0.0.1:9/a.nc"])
    toml.write_text(toml.read_text().replace('from = ["era5"]', 'from = ["era6"]'))
    result = run_cli(["cube", "--sources", str(toml)])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "astroingest: error: sources.toml: [cubes.era5_surface] from: no source named 'era6' (known: era5)"
    ]
    assert not (tmp_path / "astroingest-data" / "cubes").exists()


def test_cubes_on_s3_from_raw_on_s3(s3: MotoServer, tmp_path: Path) -> None:
    client = s3.client()
    for bucket in ("astro-primary", "astro-cubes"):
        client.create_bucket(Bucket=bucket)
    files = tmp_path / "files"
    files.mkdir()
    store = f"""
[store]
raw = "s3://astro-primary/raw"
cubes = "s3://astro-cubes/v1"
endpoint_url = "{s3.endpoint}"
"""
    with ArchiveServer() as archive:
        urls = [archive.add("era5/jan.nc", netcdf(files, "jan.nc", range(0, 30)))]
        toml = sources(tmp_path, urls, store)
        env = {**CREDENTIALS, "HOME": str(tmp_path / "home")}
        result = run_cli(["run", "--sources", str(toml), "--cubes"], env=env)
        assert result.returncode == 0, result.stderr
    location = CubeLocation("s3://astro-cubes/v1/era5_surface", endpoint_url=s3.endpoint)
    manifest, session = read_manifest(location)
    assert manifest.version == 1 and manifest.samples.count == 30

    import xarray as xr

    opened = xr.open_zarr(session.store, consolidated=False)
    assert opened["t2m"].shape == (30, 9, 12)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="astro-cubes").get("Contents", [])]
    assert keys and all(k.startswith("v1/era5_surface/") for k in keys)


def test_an_input_reaching_back_in_time_rebuilds_the_cube_in_order(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    with ArchiveServer() as archive:
        urls = [archive.add("era5/b_feb.nc", netcdf(files, "feb.nc", range(48, 96)))]
        toml = sources(tmp_path, urls)
        assert run_cli(["run", "--sources", str(toml), "--cubes"]).returncode == 0
        urls.append(archive.add("era5/c_jan.nc", netcdf(files, "jan.nc", range(0, 48))))
        toml = sources(tmp_path, urls)
        result = run_cli(["run", "--sources", str(toml), "--cubes"])
        assert result.returncode == 0, result.stderr
        assert "rebuilt" in result.stdout
    location = CubeLocation((tmp_path / "astroingest-data" / "cubes" / "era5_surface").as_uri())
    manifest, session = read_manifest(location)
    import zarr

    time = zarr.open_group(session.store, mode="r")["time"][:]
    assert manifest.version == 2 and (np.diff(time) > 0).all() and time.size == 96
