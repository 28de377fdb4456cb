"""``plugin = "nasa.exoplanet_archive"``: the archive's TAP service, through the real engine.

There is no recorded Exoplanet Archive TAP payload (fixtures/SOURCES.md, "Gap"). The
bodies served here are therefore:

* CSV: the archive's own row for TOI 256.01, recorded from its legacy nstedAPI as an IPAC
  table (nasa/exoplanet_api_toi_256.01.ipac.txt), converted to CSV by :func:`toi_csv` in
  this file (DERIVED: same columns and values, nulls left empty as TAP CSV does). It is real
  archive content, not the TAP wire format.
* VOTable: the Gaia archive's sync VOTable (esa/gaia_dr3_sync_top20_source_id.votable.xml)
  standing in for the generic VOTable shape. It is not Exoplanet Archive content; only the
  plugin's handling of a VOTable answer is under test.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from astroingest._report import RunReport
from tests.plugins.test_tap import FakeUws, only_asset, stored
from tests.plugins.test_tap import expected_key as key

Run = Callable[..., RunReport]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TAP = "https://exoplanetarchive.ipac.caltech.edu/TAP"
TOI_QUERY = "select * from toi where toi = 256.01"
GAIA_VOTABLE = (FIXTURES / "esa/gaia_dr3_sync_top20_source_id.votable.xml").read_bytes()
FAST = "[defaults]\nretries = 1\nbackoff = 0.01\nmax_backoff = 0.02\n"
CITATION = "https://exoplanetarchive.ipac.caltech.edu/docs/doi.html"


def toi_csv() -> bytes:
    """The recorded IPAC table of TOI 256.01 as CSV (columns cut at the header's '|' marks)."""
    text = (FIXTURES / "nasa/exoplanet_api_toi_256.01.ipac.txt").read_text()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("|"))
    rows = [line for line in lines if line.strip() and not line.startswith(("|", "\\"))]
    bars = [i for i, c in enumerate(header) if c == "|"]
    spans = list(pairwise(bars))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header[a + 1 : b].strip() for a, b in spans)
    for row in rows:
        values = (row[a:b].strip() for a, b in spans)
        writer.writerow("" if value == "null" else value for value in values)
    return out.getvalue().encode()


TOI_CSV = toi_csv()


def source(query: str, **extra: object) -> str:
    lines = ["[sources.exo]", 'plugin = "nasa.exoplanet_archive"', f"query = {json.dumps(query)}"]
    lines += [f"{name} = {json.dumps(value)}" for name, value in extra.items()]
    return FAST + "\n".join(lines) + "\n"


def test_toi_csv_is_the_recorded_row() -> None:
    [row] = list(csv.DictReader(io.StringIO(TOI_CSV.decode())))
    assert (row["toi"], row["tid"], row["tfopwg_disp"], row["objectid"]) == (
        "256.01",
        "92226327",
        "KP",
        "",
    )
    assert len(row) == 110


def test_sync_csv_is_the_default_with_the_documented_lower_case_parameters(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    # Only query= and format=: the URL match fails on any extra parameter (REQUEST, LANG…).
    url = httpx.URL(f"{TAP}/sync", params={"query": TOI_QUERY, "format": "csv"})
    httpx_mock.add_response(url=url, content=TOI_CSV, headers={"Content-Type": "text/csv"})

    report = astroingest_run(source(TOI_QUERY))

    asset = only_asset(report)
    assert (asset.status, asset.validator, asset.quality) == ("stored", "csv", 1.0)
    assert asset.url == str(url)
    expected = key("toi", TOI_QUERY, "csv", ".csv")
    assert stored(tmp_path, "exo") == {expected: TOI_CSV}
    assert asset.provenance == {
        "provider": "NASA Exoplanet Archive",
        "endpoint": f"{TAP}/sync",
        "mode": "sync",
        "table": "toi",
        "query": TOI_QUERY,
        "format": "csv",
        "citation": CITATION,
    }


@pytest.mark.parametrize(
    ("table", "doi"), [("pscomppars", "10.26133/NEA13"), ("ps", "10.26133/NEA12")]
)
def test_votable_of_ps_and_pscomppars_carries_the_table_doi(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, table: str, doi: str
) -> None:
    query = f"select pl_name, pl_eqt, st_teff from {table}"
    url = httpx.URL(f"{TAP}/sync", params={"query": query, "format": "votable"})
    httpx_mock.add_response(
        url=url, content=GAIA_VOTABLE, headers={"Content-Type": "application/x-votable+xml"}
    )

    report = astroingest_run(source(query, format="votable"))

    asset = only_asset(report)
    assert (asset.status, asset.validator) == ("stored", "votable")
    assert asset.provenance is not None
    assert (asset.provenance["doi"], asset.provenance["table"]) == (doi, table)
    assert stored(tmp_path, "exo") == {key(table, query, "votable", ".vot"): GAIA_VOTABLE}


def test_async_mode_submits_lower_case_parameters_and_deletes_the_job(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    uws = FakeUws(
        httpx_mock,
        TAP,
        TOI_CSV,
        created="QUEUED",
        polls=["EXECUTING", "COMPLETED"],
        result_headers={"Content-Type": "text/csv"},
    )

    report = astroingest_run(source(TOI_QUERY, mode="async", poll_interval=0.01, poll_max=0.02))

    asset = only_asset(report)
    assert asset.status == "stored", asset.error
    assert uws.submitted == {"query": TOI_QUERY, "format": "csv", "PHASE": "RUN"}
    assert uws.log[-2:] == [("GET", "/results/result"), ("DELETE", "DELETE")]
    # The same key as the sync query: a switch of mode does not duplicate the table.
    assert stored(tmp_path, "exo") == {key("toi", TOI_QUERY, "csv", ".csv"): TOI_CSV}
    assert asset.provenance is not None and asset.provenance["mode"] == "async"
