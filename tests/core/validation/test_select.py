"""choose(): extension first, then media type, then text/binary; and the plugin hook."""

from __future__ import annotations

import pytest

from astroingest.validation import BUILTIN_VALIDATORS, ValidatorType, builtin, choose
from astroingest.validation._binary import BinaryValidator


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("gaia/result.csv", "csv"),
        ("eso/table.CSV", "csv"),
        ("eso/table.csv.gz", "gzip"),
        ("cube.fits.gz", "gzip"),
        ("archive.tgz", "gzip"),
        ("images/frame.FITS", "fits"),
        ("images/frame.fz", "fits"),
        ("era5/t2m.nc", "netcdf_hdf5"),
        ("modis/MOD021KM.hdf", "netcdf_hdf5"),
        ("atl03/ATL03_20221012.h5", "netcdf_hdf5"),
        ("store.zarr.zip", "zip"),
        ("gaia/result.vot", "votable"),
        ("gaia/result.votable.xml", "votable"),
        ("ncbi/esearch.xml", "xml"),
        ("ncbi/NP_416719.gbwithparts", "genbank"),
        ("ncbi/porin.faa", "fasta"),
        ("nasa/toi.tbl", "text"),
        ("cmr/granules.geojson", "json"),
        ("catalog.tab", "tsv"),
    ],
)
def test_extension_decides(key: str, expected: str) -> None:
    assert choose(BUILTIN_VALIDATORS, "application/octet-stream", key).name == expected


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        ("text/csv; charset=utf-8", "csv"),
        ("text/tab-separated-values", "tsv"),
        ("application/x-votable+xml", "votable"),
        ("application/x-votable+xml;serialization=TABLEDATA", "votable"),
        ("text/xml;content=x-votable", "votable"),
        ('text/xml; content="x-votable"', "votable"),
        ("application/xml; content=calselector", "xml"),
        ("application/vnd.nasa.cmr.umm_results+json;version=1.6.5", "json"),
        ("application/geo+json", "json"),
        ("application/problem+json", "json"),
        ("application/atom+xml", "xml"),
        ("IMAGE/FITS", "fits"),
        ("application/x-netcdf", "netcdf_hdf5"),
        ("application/x-gzip", "gzip"),
        ("text/plain", "text"),
        ("text/html", "text"),
        ("text/x-ipac-table", "text"),
        ("application/octet-stream", "binary"),
        ("application/x-unknown", "binary"),
        (None, "binary"),
    ],
)
def test_media_type_decides_without_extension(media_type: str | None, expected: str) -> None:
    assert choose(BUILTIN_VALIDATORS, media_type, "sync/nph-query").name == expected


def test_extension_beats_media_type() -> None:
    assert choose(BUILTIN_VALIDATORS, "text/plain", "cube.fits").name == "fits"
    assert choose(BUILTIN_VALIDATORS, "application/json", "t.csv").name == "csv"
    assert choose(BUILTIN_VALIDATORS, "application/json", "t.xml").name == "xml"


def test_specific_media_type_refines_a_generic_extension() -> None:
    assert choose(BUILTIN_VALIDATORS, "application/x-votable+xml", "tap/result.xml").name == (
        "votable"
    )
    assert choose(BUILTIN_VALIDATORS, "text/csv", "table.txt").name == "csv"
    assert choose(BUILTIN_VALIDATORS, "text/plain", "table.txt").name == "text"


def test_longest_extension_wins_whatever_the_order() -> None:
    short = ValidatorType("short", BinaryValidator, extensions=(".gz",))
    long = ValidatorType("long", BinaryValidator, extensions=(".csv.gz",))
    assert choose([short, long], None, "x.csv.gz").name == "long"
    assert choose([long, short], None, "x.csv.gz").name == "long"


def test_no_binary_fallback_is_an_error() -> None:
    only = [ValidatorType("csv", BinaryValidator, extensions=(".csv",))]
    with pytest.raises(LookupError, match="binary"):
        choose(only, "application/x-unknown", "x.dat")


def test_builtins_are_unique_and_have_factories() -> None:
    names = [vt.name for vt in BUILTIN_VALIDATORS]
    assert len(names) == len(set(names))
    for vt in BUILTIN_VALIDATORS:
        instance = vt.factory()
        instance.feed(b"x")
        assert instance.finish().validator == vt.name
        assert all(ext.startswith(".") and ext == ext.lower() for ext in vt.extensions)


def test_builtin_module_is_a_pluggy_plugin() -> None:
    assert hasattr(builtin.astroingest_validators, "astroingest_impl")
    assert builtin.astroingest_validators() == list(BUILTIN_VALIDATORS)
