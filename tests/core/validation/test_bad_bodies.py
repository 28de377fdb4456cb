"""Bodies that must score low: HTML pages, truncation, errors, malformed documents."""

from __future__ import annotations

import gzip
import io
import random
import struct
import zipfile

import pytest

from astroingest.validation import BUILTIN_VALIDATORS, choose
from tests.core.validation.conftest import (
    HTML_LOGIN,
    check,
    fits_header,
    fixture,
    run_all_ways,
    value_card,
)

GAIA_VOTABLE = "esa/gaia_dr3_sync_top20_source_id.votable.xml"
OK_STATUS = b'<INFO name="QUERY_STATUS" value="OK"/>'


NAMES = [vt.name for vt in BUILTIN_VALIDATORS]


@pytest.mark.parametrize("name", NAMES)
def test_html_page_scores_zero_in_every_validator(name: str) -> None:
    report = run_all_ways(name, HTML_LOGIN)
    assert report.score == 0
    assert not check(report, "not_html").passed
    assert check(report, "not_html").critical


@pytest.mark.parametrize("key", ["a.fits", "a.csv", "a.json", "a.nc", "a.zip", "a.gz", "a.bin"])
def test_login_page_served_as_data(key: str) -> None:
    vt = choose(BUILTIN_VALIDATORS, "application/octet-stream", key)
    report = run_all_ways(vt.name, HTML_LOGIN)
    assert report.score == 0
    assert report.failed()[0].name == "not_html"


@pytest.mark.parametrize(
    "head",
    [
        b"<html><body>Service unavailable</body></html>",
        b"  \r\n<HTML>\n<HEAD><TITLE>502 Bad Gateway</TITLE></HEAD>",
        b"<!doctype html><title>Sign in</title>",
        b"<!-- maintenance -->\n<body>back soon</body>",
        b'<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN"\n'
        b' "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
        b'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Error</title></head></html>',
    ],
)
def test_html_variants_are_spotted(head: bytes) -> None:
    assert not check(run_all_ways("binary", head), "not_html").passed
    assert run_all_ways("xml", head).score == 0


def test_xml_that_merely_mentions_html_is_not_html() -> None:
    body = b'<?xml version="1.0"?><doc><html>inline markup</html></doc>'
    assert run_all_ways("xml", body).score == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_empty_body_scores_zero(name: str) -> None:
    report = run_all_ways(name, b"")
    assert report.score == 0
    assert not check(report, "non_empty").passed


# --- text -------------------------------------------------------------------------------


def test_csv_with_a_ragged_row_loses_some_score() -> None:
    body = fixture("eso/tap_obs_ist_apex_quicklooks_DERIVED_pandas.csv")
    lines = body.split(b"\n")
    lines[3] += b",one too many"
    report = run_all_ways("csv", b"\n".join(lines))
    assert 0 < report.score < 0.95
    ragged = check(report, "consistent_fields")
    assert not ragged.passed
    assert ragged.detail == "1 of 5 rows do not have the header's 13 fields (they have 14)"


def test_csv_quoted_newlines_and_delimiters_stay_in_their_field() -> None:
    body = b'id,comment,value\r\n1,"line one\r\nline, two",3\r\n2,"say ""hi""",4\r\n'
    report = run_all_ways("csv", body)
    assert report.score == 1.0
    assert check(report, "data_rows").detail == "2 rows"


def test_csv_ending_inside_quotes_is_flagged() -> None:
    report = run_all_ways("csv", b'a,b\n1,"never closed\n2,3\n')
    assert not check(report, "quotes_closed").passed
    assert 0 < report.score < 1


def test_tsv_and_csv_differ_only_in_delimiter() -> None:
    body = b'ra\tdec\tname\n10.5\t-3.2\t"M 31, core"\n11.0\t-3.0\tM 33\n'
    assert run_all_ways("tsv", body).score == 1.0
    assert check(run_all_ways("csv", body), "header").detail == "1 field"


def test_non_utf8_text_scores_zero() -> None:
    latin1 = "name,city\nJosé,Bogotá\n".encode("latin-1")
    for name in ("csv", "text", "fasta", "genbank"):
        report = run_all_ways(name, latin1)
        assert report.score == 0
        assert check(report, "utf8").detail == "invalid UTF-8 at byte 13: invalid continuation byte"


def test_utf8_split_across_chunks_and_bom_are_fine() -> None:
    body = "\ufeffname,city\nJosé,Bogotá\nZoë,Kraków\n".encode()
    report = run_all_ways("csv", body)
    assert report.score == 1.0
    assert check(report, "header").detail == "2 fields"


def test_text_cut_inside_a_multibyte_character() -> None:
    report = run_all_ways("text", "Kraków".encode()[:-2])
    assert not check(report, "utf8").passed


# --- JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"hits": 1, "items": [', b'{"hits": 1,}', b"{'single': 'quotes'}", b'{"a": 1} {"b": 2}'],
)
def test_malformed_json_scores_zero(body: bytes) -> None:
    report = run_all_ways("json", body)
    assert report.score == 0
    assert not check(report, "well_formed").passed


def test_truncated_real_json_scores_zero() -> None:
    body = fixture("nasa/cmr_granules_atl03.json")
    assert run_all_ways("json", body[: len(body) // 2]).score == 0


def test_json_scalar_is_well_formed_but_not_a_payload() -> None:
    report = run_all_ways("json", b'"ok"')
    assert check(report, "well_formed").passed
    assert not check(report, "top_level").passed
    assert 0 < report.score < 1


def test_json_with_bom_is_accepted() -> None:
    assert run_all_ways("json", b'\xef\xbb\xbf[1, 2, {"a": null}]').score == 1.0


# --- XML and VOTable -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"<a><b></a>", b'<?xml version="1.0"?><a>', b"<a/><b/>", b"not xml at all", b"<x:a/>"],
)
def test_malformed_xml_scores_zero(body: bytes) -> None:
    report = run_all_ways("xml", body)
    assert report.score == 0
    assert not check(report, "well_formed").passed


def test_truncated_real_xml_scores_zero() -> None:
    body = fixture("ncbi/efetch_protein_8_gp_xml.xml")
    assert run_all_ways("xml", body[:-40]).score == 0


def test_entity_declarations_are_refused() -> None:
    laughs = (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
        b' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n]>\n'
        b"<lolz>&lol2;</lolz>\n"
    )
    for name in ("xml", "votable"):
        report = run_all_ways(name, laughs)
        assert report.score == 0
        assert check(report, "no_entities").detail == "the DTD declares entity 'lol'; refused"


def test_votable_query_status_error_scores_zero() -> None:
    error = (
        b'<INFO name="QUERY_STATUS" value="ERROR">'
        b"Cannot parse query: table gaiadr3.gaia_sauce does not exist</INFO>"
    )
    body = fixture(GAIA_VOTABLE).replace(OK_STATUS, error)
    report = run_all_ways("votable", body)
    assert report.score == 0
    status = check(report, "query_status")
    assert status.critical
    assert status.detail == "Cannot parse query: table gaiadr3.gaia_sauce does not exist"


def test_votable_error_without_text_reports_the_value() -> None:
    body = fixture(GAIA_VOTABLE).replace(OK_STATUS, b'<INFO name="QUERY_STATUS" value="ERROR"/>')
    assert check(run_all_ways("votable", body), "query_status").detail == "ERROR"


def test_votable_overflow_is_a_soft_failure() -> None:
    # DALI puts the OVERFLOW status after the table.
    body = fixture(GAIA_VOTABLE).replace(
        b"</RESOURCE>\n</VOTABLE>",
        b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n</RESOURCE>\n</VOTABLE>',
    )
    assert body != fixture(GAIA_VOTABLE)
    report = run_all_ways("votable", body)
    assert 0 < report.score < 1
    assert report.failed() == [check(report, "not_truncated")]
    assert check(report, "not_truncated").detail == "OVERFLOW: result truncated at the row limit"


def test_unnamespaced_votable_passes() -> None:
    body = (
        b'<?xml version="1.0"?><VOTABLE version="1.1"><RESOURCE><INFO name="QUERY_STATUS" '
        b'value="OK"/><TABLE><FIELD name="x" datatype="int"/><DATA><TABLEDATA><TR><TD>1</TD>'
        b"</TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
    )
    assert run_all_ways("votable", body).score == 1.0


def test_other_xml_is_not_a_votable() -> None:
    report = run_all_ways("votable", fixture("ncbi/esearch_protein_notfound.xml"))
    assert report.score == 0
    assert check(report, "votable_root").detail == "root <eSearchResult>"


# --- FITS -------------------------------------------------------------------------------

PRIMARY = fits_header(
    value_card("SIMPLE", "T"), value_card("BITPIX", "8"), value_card("NAXIS", "0")
)
IMAGE = fits_header(
    "XTENSION= 'IMAGE   '",
    value_card("BITPIX", "-32"),
    value_card("NAXIS", "2"),
    value_card("NAXIS1", "10"),
    value_card("NAXIS2", "20"),
    value_card("PCOUNT", "0"),
    value_card("GCOUNT", "1"),
)
IMAGE_DATA = bytes(800) + bytes(2880 - 800)


def test_minimal_fits_is_valid() -> None:
    assert len(PRIMARY) == 2880
    report = run_all_ways("fits", PRIMARY)
    assert report.score == 1.0
    assert check(report, "complete").detail == "1 HDU"


def test_fits_with_an_image_extension() -> None:
    report = run_all_ways("fits", PRIMARY + IMAGE + IMAGE_DATA)
    assert report.score == 1.0
    assert check(report, "complete").detail == "2 HDUs"


def test_fits_not_a_multiple_of_2880_loses_score() -> None:
    report = run_all_ways("fits", PRIMARY + IMAGE + IMAGE_DATA[:800])
    assert 0 < report.score < 1
    assert report.failed() == [check(report, "block_aligned")]


def test_fits_cut_inside_its_data() -> None:
    report = run_all_ways("fits", PRIMARY + IMAGE + IMAGE_DATA[:500])
    assert 0 < report.score < 1
    assert {c.name for c in report.failed()} == {"complete", "block_aligned"}


def test_fits_cut_at_a_block_boundary_inside_the_data() -> None:
    big = fits_header(
        value_card("SIMPLE", "T"),
        value_card("BITPIX", "16"),
        value_card("NAXIS", "1"),
        value_card("NAXIS1", "4000"),
    )
    report = run_all_ways("fits", big + bytes(2880))
    assert report.failed() == [check(report, "complete")]


def test_fits_without_end_card_scores_zero() -> None:
    body = PRIMARY.replace(b"END" + b" " * 77, b" " * 80)
    report = run_all_ways("fits", body)
    assert report.score == 0
    assert not check(report, "end_card").passed


def test_fits_with_wrong_magic_scores_zero() -> None:
    assert run_all_ways("fits", b"SIMPLEX = T".ljust(2880)).score == 0


# --- HDF5 / NetCDF ----------------------------------------------------------------------

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _hdf5(size: int, stored_eof: int, userblock: int = 0) -> bytes:
    """A version-2 superblock (8-byte addresses) saying the file is ``stored_eof`` long."""
    superblock = HDF5_SIGNATURE + bytes([2, 8, 8, 0])
    superblock += struct.pack("<QQQQ", 0, 2**64 - 1, stored_eof, 48) + bytes(4)
    body = bytes(userblock) + superblock
    return body + bytes(size - len(body))


def test_hdf5_signature_and_size() -> None:
    report = run_all_ways("netcdf_hdf5", _hdf5(4096, 4096))
    assert report.score == 1.0
    assert check(report, "magic").detail == "HDF5 signature at byte 0"


def test_hdf5_after_a_userblock() -> None:
    report = run_all_ways("netcdf_hdf5", _hdf5(4096, 3584, userblock=512))
    assert check(report, "magic").detail == "HDF5 signature at byte 512"


def test_truncated_hdf5_loses_score() -> None:
    report = run_all_ways("netcdf_hdf5", _hdf5(3000, 4096))
    assert report.failed() == [check(report, "complete")]


@pytest.mark.parametrize(
    ("magic", "detail"),
    [
        (b"CDF\x01", "NetCDF classic"),
        (b"CDF\x02", "NetCDF 64-bit offset"),
        (b"\x0e\x03\x13\x01", "HDF4"),
    ],
)
def test_netcdf_classic_and_hdf4_magic(magic: bytes, detail: str) -> None:
    report = run_all_ways("netcdf_hdf5", magic + bytes(200))
    assert report.score == 1.0
    assert check(report, "magic").detail == detail


# --- gzip and zip -------------------------------------------------------------------------

CSV_BODY = fixture("eso/tap_obs_dbo_raw_sgra_DERIVED_pandas.csv")


def test_gzip_made_by_the_gzip_module() -> None:
    report = run_all_ways("gzip", gzip.compress(CSV_BODY))
    assert report.score == 1.0
    assert check(report, "complete").detail == f"1 member, {len(CSV_BODY)} bytes uncompressed"


def test_multi_member_gzip_with_zero_padding() -> None:
    body = gzip.compress(CSV_BODY) + gzip.compress(b"second member") + bytes(64)
    report = run_all_ways("gzip", body)
    assert report.score == 1.0
    assert check(report, "complete").detail.startswith("2 members")


@pytest.mark.parametrize("cut", [1, 4, 8, 200])
def test_truncated_gzip_is_incomplete(cut: int) -> None:
    report = run_all_ways("gzip", gzip.compress(CSV_BODY)[:-cut])
    assert not check(report, "complete").passed
    assert check(report, "inflates").passed
    assert 0 < report.score < 1


def test_gzip_with_a_bad_crc_scores_zero() -> None:
    body = bytearray(gzip.compress(CSV_BODY))
    body[-8] ^= 0xFF  # the CRC-32 in the trailer
    report = run_all_ways("gzip", bytes(body))
    assert report.score == 0
    assert "incorrect data check" in check(report, "inflates").detail


def test_gzip_followed_by_garbage_is_incomplete() -> None:
    report = run_all_ways("gzip", gzip.compress(CSV_BODY) + b"<html>")
    assert not check(report, "complete").passed


def _zip(*entries: tuple[str, bytes], comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
        archive.comment = comment
    return buffer.getvalue()


def test_zip_made_by_zipfile() -> None:
    body = _zip(("table.csv", CSV_BODY), ("README", b"hello"), comment=b"from the archive")
    report = run_all_ways("zip", body)
    assert report.score == 1.0
    assert check(report, "end_of_central_directory").detail == "2 entries"


def test_empty_zip() -> None:
    assert run_all_ways("zip", _zip()).score == 1.0


def test_truncated_zip_loses_its_end_record() -> None:
    report = run_all_ways("zip", _zip(("table.csv", CSV_BODY))[:-10])
    assert report.failed() == [check(report, "end_of_central_directory")]


def test_zip_longer_than_the_tail_buffer() -> None:
    noise = random.Random(7).randbytes(100_000)  # incompressible, so the zip stays big
    body = _zip(("big.bin", noise), ("table.csv", CSV_BODY))
    assert len(body) > 65_557
    assert run_all_ways("zip", body).score == 1.0


def test_gzip_is_not_a_zip() -> None:
    assert run_all_ways("zip", gzip.compress(CSV_BODY)).score == 0
