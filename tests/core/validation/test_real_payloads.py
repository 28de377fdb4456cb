"""Real recorded archive payloads (tests/fixtures, see PROVENANCE.md) pass their validator."""

from __future__ import annotations

import re

import pytest

from astroingest.validation import BUILTIN_VALIDATORS, choose
from tests.core.validation.conftest import check, fixture, run_all_ways

# (fixture, media type the archive serves it with, validator choose() must pick)
PAYLOADS = [
    ("esa/gaia_dr3_sync_top20_source_id.votable.xml", "application/x-votable+xml", "votable"),
    (
        "esa/gaia_job_1744351221317O-result_plain.votable.xml",
        "text/xml;content=x-votable",
        "votable",
    ),
    ("esa/gaia_dr3_launch_job.json", "application/json", "json"),
    ("esa/gaia_uws_job_1542458555634O_completed.xml", "text/xml", "xml"),
    ("eso/tap_obs_dbo_raw_sgra_DERIVED_pandas.csv", "text/csv", "csv"),
    ("eso/tap_obs_ist_apex_quicklooks_DERIVED_pandas.csv", "text/csv; charset=utf-8", "csv"),
    ("eso/tap_obs_tap_schema_ist_tables_DERIVED_pandas.csv", "text/csv", "csv"),
    (
        "eso/calselector_v1_associations_FORS2_raw2raw.xml",
        "application/xml; content=calselector",
        "xml",
    ),
    ("ncbi/efetch_protein_16130152_gbwithparts.gb", "text/plain", "genbank"),
    ("ncbi/efetch_protein_8_gp_xml.xml", "text/xml", "xml"),
    ("ncbi/esearch_pubmed_cancer_usehistory.xml", "text/xml; charset=UTF-8", "xml"),
    ("ncbi/esearch_protein_notfound.xml", "text/xml", "xml"),
    (
        "nasa/cmr_granules_G1593453400-LAADS.umm_json",
        "application/vnd.nasa.cmr.umm_results+json;version=1.6.5",
        "json",
    ),
    ("nasa/cmr_granules_atl03.json", "application/json;charset=utf-8", "json"),
    ("nasa/exoplanet_api_toi_256.01.ipac.txt", "text/plain", "text"),
    (
        "copernicus/cdse_odata_products_s2_l1c_expand_attributes_assets.json",
        "application/json",
        "json",
    ),
]


@pytest.mark.parametrize(("path", "media_type", "name"), PAYLOADS)
def test_real_payload_scores_one_however_chunked(path: str, media_type: str, name: str) -> None:
    assert choose(BUILTIN_VALIDATORS, media_type, path).name == name
    report = run_all_ways(name, fixture(path))
    assert report.validator == name
    assert report.score == 1.0, report.failed()
    assert {c.name for c in report.checks} >= {"not_html", "non_empty"}


def test_gaia_votable_details() -> None:
    report = run_all_ways("votable", fixture("esa/gaia_dr3_sync_top20_source_id.votable.xml"))
    assert check(report, "votable_root").detail == "root <VOTABLE>"
    assert check(report, "table").detail == "1 table"
    assert check(report, "query_status").passed


def test_eso_csv_counts_rows_and_fields() -> None:
    # Quoted fields such as "Ginsburg, A" hold the delimiter and must not split.
    report = run_all_ways("csv", fixture("eso/tap_obs_ist_apex_quicklooks_DERIVED_pandas.csv"))
    assert check(report, "header").detail == "13 fields"
    assert check(report, "data_rows").detail == "5 rows"
    big = run_all_ways("csv", fixture("eso/tap_obs_dbo_raw_sgra_DERIVED_pandas.csv"))
    assert check(big, "header").detail == "63 fields"
    assert check(big, "data_rows").detail == "23 rows"


def test_genbank_record_with_contig_and_origin() -> None:
    report = run_all_ways("genbank", fixture("ncbi/efetch_protein_16130152_gbwithparts.gb"))
    assert check(report, "records").detail == "1 record, 0 not closed by //"


def test_two_genbank_records_back_to_back() -> None:
    body = fixture("ncbi/efetch_protein_16130152_gbwithparts.gb") * 2
    assert check(run_all_ways("genbank", body), "records").detail.startswith("2 records")


def test_genbank_cut_before_the_terminator() -> None:
    body = fixture("ncbi/efetch_protein_16130152_gbwithparts.gb").rstrip()[:-2]
    report = run_all_ways("genbank", body)
    assert 0 < report.score < 1
    assert {c.name for c in report.failed()} == {"terminated", "records"}


def _fasta_from_genbank() -> bytes:
    """The real NP_416719 protein, rewritten as FASTA from the GenBank ORIGIN section."""
    text = fixture("ncbi/efetch_protein_16130152_gbwithparts.gb").decode()
    origin = text[text.index("\nORIGIN") : text.rindex("\n//")]
    residues = re.sub(r"[\d\s]|ORIGIN", "", origin).upper()
    lines = [residues[i : i + 60] for i in range(0, len(residues), 60)]
    return (">NP_416719.1 outer membrane porin protein C\n" + "\n".join(lines) + "\n").encode()


def test_fasta_built_from_a_real_sequence() -> None:
    body = _fasta_from_genbank()
    report = run_all_ways("fasta", body * 3)
    assert report.score == 1.0, report.failed()
    assert check(report, "records").detail == "3 records"


def test_fasta_problems_lower_the_score() -> None:
    body = _fasta_from_genbank()
    digits = body.replace(b"\nMKVK", b"\n12VK", 1)
    assert check(run_all_ways("fasta", digits), "alphabet").detail == "'1' in record 1"
    empty = b">empty record\n" + body
    assert 0 < run_all_ways("fasta", empty).score < 1
    no_header = body.split(b"\n", 1)[1]
    assert run_all_ways("fasta", no_header).score == 0
