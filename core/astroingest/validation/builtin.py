"""The validators astroingest ships, registered through the ``astroingest_validators`` hook."""

from __future__ import annotations

from astroingest._hookimpl import hookimpl
from astroingest.validation._base import ValidatorType
from astroingest.validation._binary import (
    BinaryValidator,
    FitsValidator,
    GzipValidator,
    Hdf5Validator,
    ZipValidator,
)
from astroingest.validation._json import JsonValidator
from astroingest.validation._text import (
    CsvValidator,
    FastaValidator,
    GenbankValidator,
    TextValidator,
    TsvValidator,
)
from astroingest.validation._xml import VotableValidator, XmlValidator

BUILTIN_VALIDATORS: tuple[ValidatorType, ...] = (
    ValidatorType("csv", CsvValidator, ("text/csv",), (".csv",)),
    ValidatorType("tsv", TsvValidator, ("text/tab-separated-values",), (".tsv", ".tab")),
    ValidatorType(
        "fasta",
        FastaValidator,
        ("text/x-fasta",),
        (".fasta", ".fa", ".fna", ".faa", ".ffn"),
    ),
    ValidatorType("genbank", GenbankValidator, (), (".gb", ".gbk", ".genbank", ".gbwithparts")),
    # Any other "+json" media type reaches this one through choose()'s suffix rule.
    ValidatorType(
        "json",
        JsonValidator,
        ("application/json", "application/vnd.nasa.cmr.umm_results+json"),
        (".json", ".geojson"),
    ),
    ValidatorType("xml", XmlValidator, ("application/xml", "text/xml"), (".xml",)),
    ValidatorType(
        "votable",
        VotableValidator,
        ("application/x-votable+xml",),
        (".vot", ".votable", ".votable.xml"),
    ),
    # .fz is tile-compressed FITS: still a FITS file, SIMPLE card first.
    ValidatorType(
        "fits",
        FitsValidator,
        ("application/fits", "image/fits"),
        (".fits", ".fit", ".fts", ".fz"),
    ),
    # One type for the family; see Hdf5Validator for why .nc and .hdf can't be split.
    ValidatorType(
        "netcdf_hdf5",
        Hdf5Validator,
        ("application/x-hdf5", "application/x-hdf", "application/x-netcdf", "application/netcdf"),
        (".h5", ".hdf5", ".he5", ".nc", ".nc4", ".hdf"),
    ),
    ValidatorType(
        "gzip", GzipValidator, ("application/gzip", "application/x-gzip"), (".gz", ".tgz")
    ),
    ValidatorType("zip", ZipValidator, ("application/zip",), (".zip", ".zarr.zip")),
    ValidatorType("text", TextValidator, ("text/plain",), (".txt", ".tbl", ".ipac")),
    ValidatorType("binary", BinaryValidator, ("application/octet-stream",)),
)


@hookimpl
def astroingest_validators() -> list[ValidatorType]:
    return list(BUILTIN_VALIDATORS)
