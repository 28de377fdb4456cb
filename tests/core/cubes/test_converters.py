"""The built-in converters on real data: ERA5-shaped NetCDF4, recorded TAP results, GenBank."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from astroingest.cubes import (
    ConvertInput,
    CubeError,
    CubeLocation,
    CubeSpec,
    CubeWriter,
    Layout,
    read_manifest,
)
from astroingest.cubes.grid import GRID
from astroingest.cubes.sequences import SEQUENCES
from astroingest.cubes.table import TABLE
from tests.core.cubes.conftest import era5_like

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def convert(converter, tmp_path: Path, files: list[Path], **spec: object):  # type: ignore[no-untyped-def]
    location = CubeLocation((tmp_path / "cubes" / converter.name).as_uri())
    table = CubeSpec.model_validate({"from": ["src"], "converter": converter.name, **spec})
    layout = Layout(
        table.sample_dim or converter.sample_dim, table.chunks, grows=tuple(converter.grows)
    )
    with CubeWriter(location, converter.name, converter.name, layout) as writer:
        for path in files:
            converter.convert(
                ConvertInput(path, "src", path.name, "sha-" + path.name, table), writer
            )
        manifest = writer.commit({f"src/{p.name}": "sha" for p in files}, {})
    _, session = read_manifest(location)
    return manifest, zarr.open_group(session.store, mode="r"), session


def test_grid_keeps_variables_attributes_and_appends_new_steps_only(tmp_path: Path) -> None:
    first = era5_like(tmp_path / "jan.nc", range(0, 30))
    era5_like(tmp_path / "jan_again.nc", range(20, 40))  # overlaps hours 20-29
    manifest, group, session = convert(
        GRID, tmp_path, [tmp_path / "jan.nc", tmp_path / "jan_again.nc"]
    )
    assert manifest is not None
    assert sorted(manifest.variables) == ["q", "t2m", "tcc"]
    assert group["t2m"].shape == (40, 9, 12)
    np.testing.assert_array_equal(group["t2m"][:30], first["t2m"].values)
    assert group["t2m"].attrs["units"] == "K"
    assert group["t2m"].attrs["standard_name"] == "air_temperature"
    assert group["time"].attrs["units"].startswith("hours since 1900-01-01")
    # Each file has a NaN in its first step; the second file's falls on a step left out.
    assert manifest.variables["t2m"].stats.nan_count == 1

    import xarray as xr

    opened = xr.open_zarr(session.store, consolidated=False)
    assert str(opened["time"].values[0]).startswith("2014-01-29")  # 1,000,000 h after 1900
    assert opened["t2m"].dims == ("time", "latitude", "longitude")


def test_grid_names_what_is_missing(tmp_path: Path) -> None:
    era5_like(tmp_path / "a.nc", range(0, 3))
    with pytest.raises(CubeError, match="no variable 'sst'"):
        convert(GRID, tmp_path, [tmp_path / "a.nc"], variables=["sst"])
    with pytest.raises(CubeError, match="no 'valid_time' dimension"):
        convert(GRID, tmp_path, [tmp_path / "a.nc"], sample_dim="valid_time")
    (tmp_path / "page.nc").write_bytes(b"<html>login</html>")
    with pytest.raises(CubeError, match="not a readable NetCDF4"):
        convert(GRID, tmp_path, [tmp_path / "page.nc"])


def test_table_from_a_gaia_votable_keeps_units_descriptions_and_nulls(tmp_path: Path) -> None:
    path = tmp_path / "gaia.xml"
    shutil.copy(FIXTURES / "esa" / "gaia_dr3_sync_top20_source_id.votable.xml", path)
    manifest, group, _ = convert(TABLE, tmp_path, [path])
    assert manifest is not None and manifest.samples.count == 2
    assert group["source_id"][:].tolist() == [4583627001381815936, 5348723816842275584]
    assert group["source_id"].dtype == np.int64
    assert group["ra"].attrs["unit"] == "deg"
    assert group["ra"].attrs["description"] == "Right ascension"
    assert group["designation"][:].tolist()[0].startswith("Gaia DR3 ")
    # Gaia leaves some columns empty for these stars: masked, NaN where float.
    masked = [
        name for name in group.array_keys() if name.endswith("_mask") and group[name][:].any()
    ]
    assert masked, "expected null cells in the recorded result"
    for mask_name in masked:
        column = group[mask_name].attrs["mask_for"]
        if group[column].dtype.kind == "f":
            assert np.isnan(group[column][:][group[mask_name][:]]).all()


def test_table_from_tap_json_and_from_csv(tmp_path: Path) -> None:
    json_path = tmp_path / "job.json"
    shutil.copy(FIXTURES / "esa" / "gaia_dr3_launch_job.json", json_path)
    manifest, group, _ = convert(TABLE, tmp_path / "j", [json_path])
    assert manifest is not None and manifest.samples.count == 1
    assert group["source_id"][0] == 5937144193345094528
    assert group["ra"].attrs["ucd"] == "pos.eq.ra;meta.main"

    csv_path = tmp_path / "sgra.csv"
    shutil.copy(FIXTURES / "eso" / "tap_obs_dbo_raw_sgra_DERIVED_pandas.csv", csv_path)
    manifest, group, _ = convert(
        TABLE,
        tmp_path / "c",
        [csv_path],
        variables=["access_estsize", "dec", "instrument", "det_chip1id"],
    )
    assert manifest is not None
    assert group["access_estsize"].dtype == np.int64 and group["access_estsize"][0] == 18026
    assert group["dec"].dtype == np.float64
    assert group["instrument"][0] == "SINFONI"
    assert group["det_chip1id_mask"][:].all()  # an empty column stays masked


def test_sequences_from_genbank_and_fasta(tmp_path: Path) -> None:
    gb = tmp_path / "NP_416719.gb"
    shutil.copy(FIXTURES / "ncbi" / "efetch_protein_16130152_gbwithparts.gb", gb)
    fasta = tmp_path / "derived.fasta"
    fasta.write_text(">seqA first test record\nACGT\nacgtN\n>seqB\nMKV\n")
    manifest, group, _ = convert(SEQUENCES, tmp_path, [gb, fasta])
    assert manifest is not None and manifest.samples.count == 3
    assert group["id"][:].tolist() == ["NP_416719.1", "seqA", "seqB"]
    assert group["organism"][0] == "Escherichia coli str. K-12 substr. MG1655"
    assert group["molecule"][0] == "protein"
    offsets, lengths = group["offset"][:], group["length"][:]
    residues = group["residues"]
    assert lengths.tolist() == [367, 9, 3]
    first = bytes(residues[offsets[0] : offsets[0] + 10]).decode()
    assert first == "MKVKVLSLLV"
    assert bytes(residues[offsets[1] : offsets[1] + lengths[1]]) == b"ACGTACGTN"
    assert group["description"][1] == "first test record"
