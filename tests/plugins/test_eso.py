"""``plugin = "eso.tap"``: ESO tap_obs queries, and products from the data portal.

pytest-httpx serves the archive at its real URLs (https://archive.eso.org/tap_obs,
https://dataportal.eso.org/dataPortal/file/<dp_id>, https://www.eso.org/sso/oidc/token) and the
plans run through the real engine (``astroingest_run``). Fixtures (tests/fixtures/eso/,
provenance in tests/fixtures/eso/PROVENANCE.md):

* tap_obs_dbo_raw_sgra_DERIVED_pandas.csv: a real ``dbo.raw`` result (23 SINFONI/NACO… rows
  with dp_id, access_url, access_estsize…) that astroquery re-wrote with pandas. It is not the
  wire format, so the tests read its rows, drop pandas' leading index column, and serve them
  the way TAP does: as RFC 4180 CSV (CRLF) or as a TABLEDATA VOTable (ESO's default format);
* tap_obs_ist_apex_quicklooks_DERIVED_pandas.csv: a real ``ist.apex_quicklooks`` result (ids
  ending in ``.TAR``, no dp_id column), served the same way;
* dataportal_raw_frame_b16_SYNTHETIC.fits.Z / _b12_: what the portal serves for raw frames
  (unix ``compress`` files): compress(1) output (ncompress 4.2.4.6, ``-b 16`` and ``-b 12``) of
  :func:`fits_frame` frames; the b12 one fills its table, so it holds CLEAR codes;
* esa/gaia_uws_job_1542458555634O_completed.xml (tests/fixtures/esa): a real COMPLETED UWS job
  document, standing in for tap_obs's job in the async listing test.

FITS bodies are built here: a primary header of 80-character cards (SIMPLE, BITPIX, NAXIS…,
END) padded to 2880 bytes, then the data, padded too.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import gzip
import hashlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from pytest_httpx import HTTPXMock

from astroingest import ConfigError, FetchError
from astroingest._report import AssetResult, RunReport
from astroingest_plugins import eso

Run = Callable[..., RunReport]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "eso"
ESO_TAP = "https://archive.eso.org/tap_obs"
PORTAL = "https://dataportal.eso.org/dataPortal/file"
TOKEN_URL = "https://www.eso.org/sso/oidc/token"
SGRA_QUERY = "select * from dbo.raw where target = 'SGR A' and object = 'SGR A'"
APEX_QUERY = "select * from ist.apex_quicklooks where project_id = 'E-095.F-9802A-2015'"
USER = "alice"
PASSWORD = "Pa55-w0rd-for-eso"
VOT_TYPE = "application/x-votable+xml"
BLOCK = 2880
LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>ESO Login</title></head><body>log in</body></html>"

FAST = """
[defaults]
retries = 2
backoff = 0.01
max_backoff = 0.02
read_timeout = 5
"""


# -- payloads ---------------------------------------------------------------------------------


def pandas_rows(name: str) -> tuple[list[str], list[dict[str, str]]]:
    """A DERIVED pandas CSV's columns and rows, without pandas' unnamed index column."""
    with (FIXTURES / name).open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        assert header[0] == ""  # the index pandas added
        rows = [dict(zip(header[1:], row[1:], strict=True)) for row in reader]
    return header[1:], rows


RAW_COLUMNS, RAW_ROWS = pandas_rows("tap_obs_dbo_raw_sgra_DERIVED_pandas.csv")
APEX_COLUMNS, APEX_ROWS = pandas_rows("tap_obs_ist_apex_quicklooks_DERIVED_pandas.csv")
FRAME_B16 = (FIXTURES / "dataportal_raw_frame_b16_SYNTHETIC.fits.Z").read_bytes()
FRAME_B12 = (FIXTURES / "dataportal_raw_frame_b12_SYNTHETIC.fits.Z").read_bytes()


def tap_csv(columns: Sequence[str], rows: Sequence[dict[str, str]]) -> bytes:
    """Rows as a TAP service sends CSV: a header line, RFC 4180 quoting, CRLF."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([[row.get(c, "") for c in columns] for row in rows])
    return out.getvalue().encode()


def votable(
    columns: Sequence[str], rows: Sequence[dict[str, str]], status: str = "OK", message: str = ""
) -> bytes:
    """Rows as a TABLEDATA VOTable 1.4, as ESO's tap_obs answers FORMAT=votable."""
    fields = "".join(f'<FIELD name="{c}" datatype="char" arraysize="*"/>' for c in columns)
    trs = "".join(
        "<TR>" + "".join(f"<TD>{escape(row.get(c, ''))}</TD>" for c in columns) + "</TR>"
        for row in rows
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
        f'<RESOURCE type="results"><INFO name="QUERY_STATUS" value="{status}">{message}</INFO>'
        f"<TABLE>{fields}<DATA><TABLEDATA>{trs}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
    ).encode()


def card(keyword: str, value: str = "") -> bytes:
    text = f"{keyword:<8}= {value:>20}" if value else keyword
    return text.ljust(80).encode("ascii")


def fits_frame(name: str, width: int = 48, height: int = 30, levels: int = 256) -> bytes:
    """A valid one-HDU FITS frame, BITPIX 16, pixels ``1000 + noise % levels``.

    The .Z fixtures are compress(1) of ``fits_frame("SINFO.2013-08-27T01:05:24.328", 96, 120,
    64)`` (-b 16) and ``fits_frame("SINFO.2013-08-27T01:11:59.984", 120, 160)`` (-b 12).
    """
    header = b"".join(
        [
            card("SIMPLE", "T"),
            card("BITPIX", "16"),
            card("NAXIS", "2"),
            card("NAXIS1", str(width)),
            card("NAXIS2", str(height)),
            card("ORIGIN", "'ESO'"),
            card("END"),
        ]
    )
    header = header.ljust(-(-len(header) // BLOCK) * BLOCK, b" ")
    stream = b"".join(
        hashlib.sha256(f"{name}:{i}".encode()).digest() for i in range(width * height // 16 + 1)
    )
    pixels = b"".join((1000 + stream[i] % levels).to_bytes(2, "big") for i in range(width * height))
    return header + pixels.ljust(-(-len(pixels) // BLOCK) * BLOCK, b"\0")


B16_ID, B12_ID = RAW_ROWS[0]["dp_id"], RAW_ROWS[1]["dp_id"]
FRAME_B16_FITS = fits_frame(B16_ID, 96, 120, 64)
FRAME_B12_FITS = fits_frame(B12_ID, 120, 160)


def jwt(subject: str, exp: float) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'sub': subject, 'exp': int(exp)})}.c2lnbmF0dXJl"


TOKEN = jwt("alice-1", time.time() + 8 * 3600)


# -- helpers ----------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sync_url(query: str, fmt: str, maxrec: int | None = None, base: str = ESO_TAP) -> httpx.URL:
    params = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, "FORMAT": fmt}
    if maxrec is not None:
        params["MAXREC"] = str(maxrec)
    return httpx.URL(f"{base}/sync", params=params)


def table_key(table: str, query: str, fmt: str, ext: str, maxrec: int | None = None) -> str:
    """tap's documented key: <table>-<12 hex of sha256(query \\n format [\\n MAXREC=n])>."""
    text = f"{query}\n{fmt}" + (f"\nMAXREC={maxrec}" if maxrec is not None else "")
    return f"{table}-{sha(text.encode())[:12]}{ext}"


def product_key(dp_id: str) -> str:
    return "products/" + dp_id.replace(":", "_") + ".fits"


def source(query: str = SGRA_QUERY, **extra: object) -> str:
    lines = ["[sources.eso]", 'plugin = "eso.tap"', f"query = {json.dumps(query)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return FAST + "\n".join(lines) + "\n"


def stored(tmp_path: Path, name: str = "eso") -> dict[str, bytes]:
    root = tmp_path / "astroingest-data" / "raw" / name
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def by_key(report: RunReport) -> dict[str | None, AssetResult]:
    return {a.key: a for a in report.assets}


def serve_token(httpx_mock: HTTPXMock, answer: dict[str, str], status: int = 200) -> None:
    """ESO's token endpoint, answering only the documented GET with these credentials."""
    httpx_mock.add_response(
        url=TOKEN_URL,
        method="GET",
        match_params={**eso.TOKEN_PARAMS, "username": USER, "password": PASSWORD},
        status_code=status,
        json=answer,
    )


def serve_raw_listing(
    httpx_mock: HTTPXMock, rows: Sequence[dict[str, str]] = RAW_ROWS, maxrec: int = 1001
) -> bytes:
    body = votable(RAW_COLUMNS, rows)
    httpx_mock.add_response(
        url=sync_url(SGRA_QUERY, "votable", maxrec),
        content=body,
        headers={"Content-Type": VOT_TYPE},
    )
    return body


def serve_products(
    httpx_mock: HTTPXMock, rows: Sequence[dict[str, str]], *, reusable: bool = False
) -> dict[str, bytes]:
    """Each row's product at its access_url: the first two as .Z files, the third gzipped.

    Returns the FITS each key must hold once stored.
    """
    expected: dict[str, bytes] = {}
    for index, row in enumerate(rows):
        dp_id = row["dp_id"]
        fits = {0: FRAME_B16_FITS, 1: FRAME_B12_FITS}.get(index) or fits_frame(dp_id)
        served = {0: FRAME_B16, 1: FRAME_B12, 2: gzip.compress(fits)}.get(index, fits)
        httpx_mock.add_response(
            url=row["access_url"],
            content=served,
            headers={"Content-Type": "application/octet-stream", "ETag": f'"{sha(served)[:16]}"'},
            is_reusable=reusable,
        )
        expected[product_key(dp_id)] = fits
    return expected


# -- download = false -------------------------------------------------------------------------


def test_without_download_the_result_table_is_the_one_asset(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    body = tap_csv(RAW_COLUMNS, RAW_ROWS)
    httpx_mock.add_response(
        url=sync_url(SGRA_QUERY, "csv"), content=body, headers={"Content-Type": "text/csv"}
    )
    report = astroingest_run(source(format="csv", mode="sync"))

    key = table_key("dbo.raw", SGRA_QUERY, "csv", ".csv")
    assert [(a.key, a.status) for a in report.assets] == [(key, "stored")]
    assert stored(tmp_path) == {key: body}
    [asset] = report.assets
    assert asset.validator == "csv"
    assert asset.url == str(sync_url(SGRA_QUERY, "csv"))
    assert asset.provenance is not None
    assert asset.provenance["provider"] == "ESO"
    assert asset.provenance["query"] == SGRA_QUERY
    assert asset.provenance["endpoint"] == f"{ESO_TAP}/sync"
    assert asset.provenance["terms"] == eso.TERMS


# -- download = true --------------------------------------------------------------------------


def test_products_land_as_validated_fits_with_provenance(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    listing = serve_raw_listing(httpx_mock)
    expected = serve_products(httpx_mock, RAW_ROWS)
    report = astroingest_run(source(download=True))

    table = table_key("dbo.raw", SGRA_QUERY, "votable", ".vot", 1001)
    assert report.totals.stored == len(RAW_ROWS) + 1, [(a.key, a.error) for a in report.assets]
    # The table is stored from the one plan-time request (pytest-httpx allows each response once).
    assert stored(tmp_path) == {table: listing, **expected}
    results = by_key(report)
    assert results[table].validator == "votable"
    first = results[product_key(B16_ID)]
    assert first.validator == "fits" and first.quality == 1.0
    assert first.url == f"{PORTAL}/{B16_ID}"
    assert first.sha256 == sha(FRAME_B16_FITS)
    provenance = first.provenance
    assert provenance is not None
    assert provenance["dp_id"] == B16_ID
    assert provenance["target"] == "SGR A"
    assert provenance["instrument"] == "SINFONI"
    assert provenance["programme"] == "091.B-0088(B)"
    assert provenance["ob_id"] == "200282039"
    assert provenance["access_estsize_kb"] == 18026
    assert provenance["query"] == SGRA_QUERY
    assert provenance["table_key"] == table
    assert provenance["acknowledgement"] == eso.ACKNOWLEDGEMENT
    assert all(a.size is None or a.size == len(expected.get(a.key or "", b"")) for a in [first])


def test_keys_are_stable_and_a_rerun_is_unchanged(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    rows = RAW_ROWS[:4]
    httpx_mock.add_response(
        url=sync_url(SGRA_QUERY, "votable", 1001),
        content=votable(RAW_COLUMNS, rows),
        headers={"Content-Type": VOT_TYPE},
        is_reusable=True,
    )
    expected = serve_products(httpx_mock, rows, reusable=True)
    first = astroingest_run(source(download=True))
    second = astroingest_run(source(download=True))

    assert sorted(k for k in by_key(first) if k and k.startswith("products/")) == sorted(expected)
    assert sorted(map(str, by_key(first))) == sorted(map(str, by_key(second)))
    assert second.totals.unchanged == 5 and second.totals.stored == 0
    assert {a.sha256 for a in second.assets} == {a.sha256 for a in first.assets}


def test_more_rows_than_max_products_fail_the_source_before_any_download(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    serve_raw_listing(httpx_mock, RAW_ROWS[:6], maxrec=6)
    report = astroingest_run(source(download=True, max_products=5))

    [failure] = report.assets
    assert failure.status == "failed" and failure.key is None
    assert "more than 5 products (max_products)" in (failure.error or "")
    assert stored(tmp_path) == {}
    assert [str(r.url) for r in httpx_mock.get_requests()] == [
        str(sync_url(SGRA_QUERY, "votable", 6))
    ]


def test_rows_within_max_products_are_all_fetched(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    serve_raw_listing(httpx_mock, RAW_ROWS[:5], maxrec=6)
    expected = serve_products(httpx_mock, RAW_ROWS[:5])
    report = astroingest_run(source(download=True, max_products=5))
    assert report.totals.stored == 6
    assert {k: v for k, v in stored(tmp_path).items() if k.startswith("products/")} == expected


def test_credentials_get_a_token_sent_only_to_the_portal(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESO_PASSWORD", PASSWORD)
    rows = RAW_ROWS[:3]
    serve_raw_listing(httpx_mock, rows)
    serve_token(httpx_mock, {"id_token": TOKEN, "access_token": "not-this", "token_type": "Bearer"})
    expected = serve_products(httpx_mock, rows[:2])
    # The third product is redirected off the portal: the token must not follow it.
    mirror = "https://eso-mirror.example.org/frames/third.fits"
    httpx_mock.add_response(
        url=rows[2]["access_url"], status_code=302, headers={"Location": mirror}
    )
    httpx_mock.add_response(url=mirror, content=fits_frame("third"))
    report = astroingest_run(
        source(download=True, username=USER, password="${ESO_PASSWORD}"), name="s.toml"
    )

    assert report.totals.stored == 4, [(a.key, a.error) for a in report.assets]
    assert stored(tmp_path)[product_key(rows[2]["dp_id"])] == fits_frame("third")
    assert {k: v for k, v in stored(tmp_path).items() if k in expected} == expected
    auth = {str(r.url): r.headers.get("Authorization") for r in httpx_mock.get_requests()}
    assert auth[rows[0]["access_url"]] == f"Bearer {TOKEN}"
    assert auth[rows[1]["access_url"]] == f"Bearer {TOKEN}"
    assert auth[rows[2]["access_url"]] == f"Bearer {TOKEN}"
    assert auth[mirror] is None
    assert auth[str(sync_url(SGRA_QUERY, "votable", 1001))] is None  # not to the TAP service


def test_password_and_token_stay_out_of_report_and_logs(
    httpx_mock: HTTPXMock,
    astroingest_run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ESO_PASSWORD", PASSWORD)
    serve_raw_listing(httpx_mock, RAW_ROWS[:2])
    serve_token(httpx_mock, {"id_token": TOKEN})
    serve_products(httpx_mock, RAW_ROWS[:1])
    httpx_mock.add_response(url=RAW_ROWS[1]["access_url"], status_code=403)
    with caplog.at_level(logging.DEBUG, logger="astroingest"):
        report = astroingest_run(source(download=True, username=USER, password="${ESO_PASSWORD}"))

    assert report.totals.stored == 2 and report.totals.failed == 1
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("astroingest"))
    assert "logged in as alice" in ours
    document = report.to_json()
    for secret in (PASSWORD, TOKEN):
        assert secret not in ours
        assert secret not in document


def test_a_refused_product_fails_with_the_proprietary_data_hint(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    rows = RAW_ROWS[:3]
    serve_raw_listing(httpx_mock, rows)
    serve_products(httpx_mock, rows[:2])
    httpx_mock.add_response(url=rows[2]["access_url"], status_code=401, text="Unauthorized")
    report = astroingest_run(source(download=True))

    refused = by_key(report)[product_key(rows[2]["dp_id"])]
    assert refused.status == "failed" and refused.attempts == 1
    assert refused.error is not None
    assert f"access to {rows[2]['dp_id']} refused (HTTP 401)" in refused.error
    assert "may still be proprietary" in refused.error
    assert "username and password" in refused.error
    assert report.totals.stored == 3


def test_a_401_with_a_token_renews_it_once_then_names_the_account(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESO_PASSWORD", PASSWORD)
    serve_raw_listing(httpx_mock, RAW_ROWS[:1])
    second = jwt("alice-2", time.time() + 3600)
    serve_token(httpx_mock, {"id_token": TOKEN})
    serve_token(httpx_mock, {"id_token": second})
    httpx_mock.add_response(url=RAW_ROWS[0]["access_url"], status_code=401)
    httpx_mock.add_response(url=RAW_ROWS[0]["access_url"], status_code=401)
    report = astroingest_run(source(download=True, username=USER, password="${ESO_PASSWORD}"))

    refused = by_key(report)[product_key(B16_ID)]
    assert refused.status == "failed"
    assert "the ESO account 'alice' may not be allowed to see it" in (refused.error or "")
    sent = [
        r.headers.get("Authorization")
        for r in httpx_mock.get_requests()
        if str(r.url) == RAW_ROWS[0]["access_url"]
    ]
    assert sent == [f"Bearer {TOKEN}", f"Bearer {second}"]


def test_an_expiring_token_is_replaced_before_use(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESO_PASSWORD", PASSWORD)
    serve_raw_listing(httpx_mock, RAW_ROWS[:2])
    short = jwt("alice-short", time.time() + 30)  # inside the one-minute margin
    serve_token(httpx_mock, {"id_token": short})
    serve_token(httpx_mock, {"id_token": TOKEN})
    serve_products(httpx_mock, RAW_ROWS[:2])
    report = astroingest_run(
        source(download=True, username=USER, password="${ESO_PASSWORD}", concurrency=1)
    )

    assert report.totals.stored == 3
    sent = {
        r.headers.get("Authorization") for r in httpx_mock.get_requests() if "file/" in str(r.url)
    }
    assert sent == {f"Bearer {TOKEN}"}


def test_a_refused_login_fails_the_source_without_the_password(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESO_PASSWORD", PASSWORD)
    serve_raw_listing(httpx_mock, RAW_ROWS[:2])
    serve_token(httpx_mock, {"error": "invalid_grant"}, status=401)
    report = astroingest_run(source(download=True, username=USER, password="${ESO_PASSWORD}"))

    [failure] = report.assets
    assert failure.status == "failed"
    assert "login refused for user 'alice'" in (failure.error or "")
    assert "check username and password" in (failure.error or "")
    assert PASSWORD not in report.to_json()


def test_a_login_page_instead_of_a_frame_is_quarantined(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    rows = RAW_ROWS[:2]
    serve_raw_listing(httpx_mock, rows)
    serve_products(httpx_mock, rows[:1])
    httpx_mock.add_response(
        url=rows[1]["access_url"], content=LOGIN_PAGE, headers={"Content-Type": "text/html"}
    )
    report = astroingest_run(source(download=True))

    page = by_key(report)[product_key(rows[1]["dp_id"])]
    assert page.status == "quarantined"
    assert page.validator == "fits" and page.quality == 0.0
    assert product_key(rows[1]["dp_id"]) not in stored(tmp_path)
    quarantine = tmp_path / "astroingest-data" / "logs" / "quarantine" / "eso"
    assert (quarantine / product_key(rows[1]["dp_id"])).read_bytes() == LOGIN_PAGE


def test_dry_run_lists_products_and_downloads_nothing(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    serve_raw_listing(httpx_mock)
    report = astroingest_run(source(download=True), dry_run=True)

    assert report.status == "dry-run"
    assert {a.status for a in report.assets} == {"planned"}
    keys = [a.key for a in report.assets]
    assert keys[0] == table_key("dbo.raw", SGRA_QUERY, "votable", ".vot", 1001)
    assert keys[1:] == [product_key(row["dp_id"]) for row in RAW_ROWS]
    assert [a.url for a in report.assets[1:]] == [row["access_url"] for row in RAW_ROWS]
    assert len(httpx_mock.get_requests()) == 1  # the listing query, nothing else
    assert stored(tmp_path) == {}


def test_dp_id_only_rows_are_fetched_from_the_portal_by_id_in_csv(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """dbo.raw selected without access_url (the recorded rows, three columns kept)."""
    query = "select dp_id, target, instrument from dbo.raw where target = 'SGR A'"
    columns = ["dp_id", "target", "instrument"]
    rows = [*RAW_ROWS[2:4], RAW_ROWS[2]]  # a repeated product is fetched once
    body = tap_csv(columns, rows)
    httpx_mock.add_response(
        url=sync_url(query, "csv", 1001), content=body, headers={"Content-Type": "text/csv"}
    )
    for row in rows[:2]:
        httpx_mock.add_response(url=f"{PORTAL}/{row['dp_id']}", content=fits_frame(row["dp_id"]))
    report = astroingest_run(source(query, download=True, format="csv"))

    assert report.totals.stored == 3, [(a.key, a.error) for a in report.assets]
    assert stored(tmp_path) == {
        table_key("dbo.raw", query, "csv", ".csv", 1001): body,
        **{product_key(r["dp_id"]): fits_frame(r["dp_id"]) for r in rows[:2]},
    }


def test_ids_with_their_own_extension_keep_it(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """APEX quicklooks: no dp_id column, ids (.TAR) taken from access_url, stored as served."""
    rows = APEX_ROWS[:2]
    httpx_mock.add_response(
        url=sync_url(APEX_QUERY, "votable", 1001),
        content=votable(APEX_COLUMNS, rows),
        headers={"Content-Type": VOT_TYPE},
    )
    bodies = {
        row["quicklook_id"]: b"tar archive of " + row["quicklook_id"].encode() for row in rows
    }
    for row in rows:
        httpx_mock.add_response(url=row["access_url"], content=bodies[row["quicklook_id"]])
    report = astroingest_run(source(APEX_QUERY, download=True))

    assert report.totals.stored == 3
    expected = {f"products/{name}": body for name, body in bodies.items()}
    assert {k: v for k, v in stored(tmp_path).items() if k.startswith("products/")} == expected
    assert by_key(report)["products/E-095.F-9802A.2015JUL15.TAR"].provenance is not None


DATALINK = "https://archive.eso.org/datalink/links?ID=ivo://eso.org/ID?"
DATALINK_FORMAT = "application/x-votable+xml;content=datalink"


def test_datalink_access_urls_give_each_product_its_own_id(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """ivoa.ObsCore rows whose access_url is ESO's DataLink service: the id is in its ID."""
    query = "select access_url, access_format from ivoa.ObsCore where target_name = 'SGR A'"
    columns = ["access_url", "access_format"]
    ids = ["ADP.2019-05-09T01:35:01.393", "ADP.2019-05-09T01:35:01.394"]
    rows = [{"access_url": DATALINK + i, "access_format": DATALINK_FORMAT} for i in ids]
    body = tap_csv(columns, rows)
    httpx_mock.add_response(
        url=sync_url(query, "csv", 1001), content=body, headers={"Content-Type": "text/csv"}
    )
    for dp_id in ids:
        httpx_mock.add_response(url=f"{PORTAL}/{dp_id}", content=fits_frame(dp_id))

    report = astroingest_run(source(query, download=True, format="csv"))

    assert report.totals.stored == 3, [(a.key, a.error) for a in report.assets]
    products = {k: v for k, v in stored(tmp_path).items() if k.startswith("products/")}
    assert products == {product_key(i): fits_frame(i) for i in ids}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"dp_id": "SINFO.2013-08-27T01:05:24.328"}, "SINFO.2013-08-27T01:05:24.328"),
        (
            {"obs_publisher_did": "ivo://eso.org/ID?ADP.2016-06-01T14:07:30.134"},
            "ADP.2016-06-01T14:07:30.134",
        ),
        ({"access_url": DATALINK + "ADP.2019-05-09T01:35:01.393"}, "ADP.2019-05-09T01:35:01.393"),
        (
            {"access_url": f"{PORTAL}/FORS2.2021-01-02T00:59:12.533.fits.Z"},
            "FORS2.2021-01-02T00:59:12.533.fits.Z",
        ),
        ({"access_url": ""}, ""),
    ],
)
def test_product_id_comes_from_dp_id_did_or_the_access_urls_id(
    row: dict[str, str], expected: str
) -> None:
    assert eso.product_id(row) == expected


def test_two_products_with_one_key_fail_the_source(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """Different ids that sanitise to the same file name: refused, not one silently dropped."""
    query = "select dp_id from dbo.raw where target = 'SGR A'"
    rows = [{"dp_id": "SINFO.2013-08-27T01:05:24.328"}, {"dp_id": "SINFO.2013-08-27T01_05_24.328"}]
    httpx_mock.add_response(
        url=sync_url(query, "csv", 1001),
        content=tap_csv(["dp_id"], rows),
        headers={"Content-Type": "text/csv"},
    )

    report = astroingest_run(source(query, download=True, format="csv"))

    failures = [a for a in report.assets if a.status == "failed"]
    assert len(failures) == 1, [(a.key, a.status, a.error) for a in report.assets]
    assert "would both be stored as 'products/SINFO.2013-08-27T01_05_24.328.fits'" in (
        failures[0].error or ""
    )
    assert not any(k.startswith("products/") for k in stored(tmp_path))


def test_a_query_error_in_a_200_votable_fails_the_source(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    said = "Query execution failed: timeout"
    httpx_mock.add_response(
        url=sync_url(SGRA_QUERY, "votable", 1001),
        content=votable(RAW_COLUMNS, [], status="ERROR", message=said),
        headers={"Content-Type": VOT_TYPE},
    )
    report = astroingest_run(source(download=True))

    failures = [a for a in report.assets if a.status == "failed"]
    assert len(failures) == 1 and f"ESO: the query failed: {said}" in (failures[0].error or "")


def test_a_query_error_fails_the_source_with_the_services_message(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    said = "Could not parse the ADQL query: unknown column fooo"
    httpx_mock.add_response(
        url=sync_url(SGRA_QUERY, "votable", 1001),
        status_code=400,
        content=votable([], [], status="ERROR", message=said),
        headers={"Content-Type": VOT_TYPE},
    )
    report = astroingest_run(source(download=True))

    [failure] = report.assets
    assert failure.status == "failed"
    assert f"the query was refused (HTTP 400): {said}" in (failure.error or "")


def test_a_result_without_ids_fails_with_what_to_select(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    query = "select target, instrument from dbo.raw where target = 'SGR A'"
    httpx_mock.add_response(
        url=sync_url(query, "votable", 1001),
        content=votable(["target", "instrument"], RAW_ROWS[:2]),
        headers={"Content-Type": VOT_TYPE},
    )
    report = astroingest_run(source(query, download=True))
    failures = [a for a in report.assets if a.status == "failed"]
    assert len(failures) == 1 and "select dp_id" in (failures[0].error or "")


def test_big_listings_run_as_an_async_job_that_is_deleted(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """max_products 3000 -> MAXREC 3001 > 2000 rows: a UWS job (tap.py's job functions).

    The job document is the real UWS one in tests/fixtures/esa (a COMPLETED Gaia job) with its
    job id kept; only the listing's URL and phase flow matter here.
    """
    document = (FIXTURES.parent / "esa" / "gaia_uws_job_1542458555634O_completed.xml").read_bytes()
    job = f"{ESO_TAP}/async/1542458555634O"
    rows = RAW_ROWS[:2]
    httpx_mock.add_response(
        url=f"{ESO_TAP}/async", method="POST", status_code=303, headers={"Location": job}
    )
    httpx_mock.add_response(url=job, method="GET", content=document)
    listing = votable(RAW_COLUMNS, rows)
    httpx_mock.add_response(url=f"{job}/results/result", content=listing)
    httpx_mock.add_response(url=job, method="DELETE", status_code=204)
    expected = serve_products(httpx_mock, rows)
    report = astroingest_run(source(download=True, max_products=3000))

    assert report.totals.stored == 3, [(a.key, a.error) for a in report.assets]
    table = table_key("dbo.raw", SGRA_QUERY, "votable", ".vot", 3001)
    assert stored(tmp_path) == {table: listing, **expected}
    [submitted] = [r for r in httpx_mock.get_requests() if r.method == "POST"]
    form = dict(httpx.QueryParams(submitted.content.decode()))
    assert form["MAXREC"] == "3001" and form["PHASE"] == "RUN" and form["QUERY"] == SGRA_QUERY
    assert httpx_mock.get_requests()[-1].method == "DELETE"


def test_dry_run_of_an_async_listing_submits_nothing(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    report = astroingest_run(source(download=True, max_products=3000), dry_run=True)
    assert report.assets == [] and httpx_mock.get_requests() == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"username": USER}, "username"),
        ({"password": "x"}, "username"),
        ({"token_url": "ftp://eso.org/token"}, "token_url"),
        ({"max_products": 0}, "max_products"),
        ({"max_products": 100_001}, "at most 100000 products per source"),
        ({"download": "yes"}, "download"),
    ],
)
def test_bad_settings_are_config_errors(
    astroingest_run: Run, extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        astroingest_run(source(**extra))


# -- pieces -----------------------------------------------------------------------------------


async def _chunked(data: bytes, step: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), step):
        yield data[start : start + step]


async def _decoded(data: bytes, step: int) -> bytes:
    return b"".join([chunk async for chunk in eso.uncompressed(_chunked(data, step), "x")])


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
async def test_compress_and_gzip_bodies_decode_in_any_chunking(step: int) -> None:
    assert await _decoded(FRAME_B16, step) == FRAME_B16_FITS
    assert await _decoded(FRAME_B12, step) == FRAME_B12_FITS
    double = gzip.compress(FRAME_B16_FITS[:BLOCK]) + gzip.compress(FRAME_B16_FITS[BLOCK:])
    assert await _decoded(double, step) == FRAME_B16_FITS
    assert await _decoded(LOGIN_PAGE, step) == LOGIN_PAGE


async def test_corrupt_and_truncated_compressed_bodies_fail() -> None:
    corrupt = FRAME_B12[:3] + b"\xff" * 64
    with pytest.raises(FetchError, match="corrupt"):
        await _decoded(corrupt, 4096)
    with pytest.raises(FetchError, match="truncated"):
        await _decoded(gzip.compress(FRAME_B16_FITS)[:-40], 4096)


@pytest.mark.parametrize(
    ("dp_id", "name"),
    [
        ("SINFO.2013-08-27T01:05:24.328", "SINFO.2013-08-27T01_05_24.328.fits"),
        ("ADP.2016-06-01T14:07:30.134", "ADP.2016-06-01T14_07_30.134.fits"),
        ("FORS2.2021-01-02T00:59:12.533.fits.Z", "FORS2.2021-01-02T00_59_12.533.fits"),
        ("E-095.F-9802A.2015JUL15.TAR", "E-095.F-9802A.2015JUL15.TAR"),
        ("MUSE.2019-01-01T00:00:00.000.fits.fz", "MUSE.2019-01-01T00_00_00.000.fits.fz"),
        ("../../etc/passwd", "_.._etc_passwd.fits"),
    ],
)
def test_product_names_are_decided_from_the_id_alone(dp_id: str, name: str) -> None:
    assert eso.product_file(dp_id)[0] == name


def test_the_portal_gets_a_conservative_host_limit() -> None:
    [limit] = eso.astroingest_host_limits()
    assert (limit.host, limit.connections) == ("dataportal.eso.org", 4)


def test_token_expiry_is_read_from_the_jwt() -> None:
    assert eso._expiry(jwt("x", 1234567890)) == 1234567890.0
    assert eso._expiry("opaque-token") is None
    assert asyncio.iscoroutinefunction(eso.EsoTokens.login)
