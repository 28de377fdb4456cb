"""``plugin = "nasa.cmr"`` against real recorded CMR payloads, through the real engine.

The search pages are the real UMM-G responses recorded by nsidc/earthaccess (see
tests/fixtures/nasa/PROVENANCE.md), served by pytest-httpx at CMR's real URLs with the
real response headers (CMR-Hits, CMR-Search-After, Content-Type) read from the recorded
cassette. CMR publishes sizes and checksums for multi-megabyte files that a test cannot
serve, so the download tests edit exactly those published values (SizeInBytes and
Checksum of the one file) to describe the small body the test serves; each test says
what else it edits.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pytest_httpx import HTTPXMock

from astroingest import ConfigError
from astroingest._config import load_config
from astroingest._engine import Engine, RunOptions
from astroingest._plugins import Host
from astroingest._progress import LogProgress
from astroingest._redact import Redactor
from astroingest._report import RunReport
from astroingest_plugins.nasa import cmr

Run = Callable[..., RunReport]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nasa"
PAGE = (FIXTURES / "cmr_granules_umm_json_page_size1_EXTRACTED.json").read_bytes()
LAADS = (FIXTURES / "cmr_granules_G1593453400-LAADS.umm_json").read_bytes()
CASSETTE = (FIXTURES / "cmr_vcr_cassette_test_data_links.yaml").read_text()

SEARCH = "https://cmr.earthdata.nasa.gov/search/granules.umm_json"
TOKEN_API = "https://urs.earthdata.nasa.gov/api/users/find_or_create_token"
SHORT_NAME = "SEA_SURFACE_HEIGHT_ALT_GRIDS_L4_2SATS_5DAY_6THDEG_V_JPL2205"
GRANULE = "ssh_grids_v2205_2020010212"
NC_URL = (
    "https://archive.podaac.earthdata.nasa.gov/podaac-ops-cumulus-protected/"
    f"{SHORT_NAME}/{GRANULE}.nc"
)
LAADS_URL = (
    "https://ladsweb.modaps.eosdis.nasa.gov/archive/allData/6/MYD021KM/2019/051/"
    "MYD021KM.A2019051.0430.006.2019051235515.hdf"
)
NC = b"CDF\x01" + bytes(60) + b"sea surface height anomaly, 1/6 degree grid" * 20
HDF4 = b"\x0e\x03\x13\x01" + bytes(200) + b"MODIS Aqua L1B 1km" * 30
TOKEN = "edl-user-token-0123456789"
FAST = "[defaults]\nretries = 1\nbackoff = 0.05\nmax_backoff = 0.1\nread_timeout = 5\n"


# -- the recorded cassette ------------------------------------------------------------------


def recorded(uri_part: str) -> tuple[str, dict[str, str], str]:
    """URI, response headers and body string of the cassette interaction whose uri has ``uri_part``.

    A small reader for the vcrpy YAML (PyYAML is not a dependency): only the scalar
    header values this module uses are read.
    """
    for chunk in CASSETTE.split("\n- request:\n"):
        uri = re.search(r"^    uri: (\S+)$", chunk, re.M)
        if uri and uri_part in uri.group(1):
            headers = dict(re.findall(r"^      ([A-Za-z][\w-]*):\n      - '?(.*?)'?$", chunk, re.M))
            body = re.search(r"^      string: '(.*)'$", chunk, re.M)
            return uri.group(1), headers, body.group(1) if body else ""
    raise LookupError(uri_part)


PAGE_URI, PAGE_HEADERS, _ = recorded("page_size=1&")
EMPTY_URI, EMPTY_HEADERS, EMPTY_BODY = recorded("page_size=0&")
CMR_HEADERS = {k: PAGE_HEADERS[k] for k in ("CMR-Hits", "CMR-Search-After", "Content-Type")}
SEARCH_AFTER = PAGE_HEADERS["CMR-Search-After"]


def test_the_cassette_reader_reads_the_recorded_values() -> None:
    assert PAGE_URI.startswith(SEARCH + "?page_size=1&short_name=" + SHORT_NAME)
    assert CMR_HEADERS == {
        "CMR-Hits": "218",
        "CMR-Search-After": '["pocloud",1577923200000,2546526969]',
        "Content-Type": "application/vnd.nasa.cmr.umm_results+json;version=1.6.5; charset=utf-8",
    }
    assert json.loads(EMPTY_BODY) == {"hits": 218, "took": 62, "items": []}


# -- helpers ----------------------------------------------------------------------------------


def page(*items: dict[str, Any], hits: int | None = None) -> bytes:
    return json.dumps(
        {"hits": len(items) if hits is None else hits, "took": 9, "items": list(items)}
    ).encode()


def real_item() -> dict[str, Any]:
    item: dict[str, Any] = json.loads(PAGE)["items"][0]
    return item


def item_for(
    body: bytes, *, algorithm: str = "MD5", checksum: str | None = None, size: int | None = None
) -> dict[str, Any]:
    """The real POCLOUD item, its .nc file's SizeInBytes and Checksum set for ``body``.

    That is the only edit; Size (MB), the .md5 sidecar and every link stay as recorded.
    """
    item = real_item()
    entry = item["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]
    assert entry["Name"] == f"{GRANULE}.nc"
    digest = checksum or hashlib.new(algorithm.replace("-", "").lower(), body).hexdigest()
    entry["SizeInBytes"] = len(body) if size is None else size
    entry["Checksum"] = {"Value": digest, "Algorithm": algorithm}
    return item


def next_granule(item: dict[str, Any]) -> dict[str, Any]:
    """An edited copy standing for the next 5-day granule (CMR gave no page 2 on record)."""
    text = json.dumps(item).replace(GRANULE, "ssh_grids_v2205_2020010712")
    edited: dict[str, Any] = json.loads(text.replace("G2546526969-POCLOUD", "G2546527012-POCLOUD"))
    return edited


def cmr_headers(hits: int, search_after: str | None = None) -> dict[str, str]:
    headers = {"CMR-Hits": str(hits), "Content-Type": CMR_HEADERS["Content-Type"]}
    if search_after:
        headers["CMR-Search-After"] = search_after
    return headers


def search_url(**params: str | int) -> str:
    return str(httpx.URL(SEARCH, params={k.replace("__", "[]"): str(v) for k, v in params.items()}))


def source(body: str, name: str = "ssh") -> str:
    return FAST + f'\n[sources.{name}]\nplugin = "nasa.cmr"\n' + textwrap.dedent(body)


def requests_to(httpx_mock: HTTPXMock, url_prefix: str) -> list[httpx.Request]:
    return [r for r in httpx_mock.get_requests() if str(r.url).startswith(url_prefix)]


@pytest.fixture
def dry_run(astroingest_host: Host, tmp_path: Path) -> Run:
    """Like ``astroingest_run`` under ``--dry-run``."""

    def run(sources_toml: str) -> RunReport:
        path = tmp_path / "sources.toml"
        path.write_text(sources_toml)
        config = load_config(path, astroingest_host)
        engine = Engine(config, astroingest_host, LogProgress(), Redactor(config.secrets))
        return asyncio.run(engine.run(RunOptions(dry_run=True)))

    return run


def stored(tmp_path: Path, key: str, name: str = "ssh") -> bytes:
    return (tmp_path / "astroingest-data" / "raw" / name / key).read_bytes()


# -- searching and paging ---------------------------------------------------------------------


def test_max_granules_shrinks_the_page_and_a_dry_run_only_lists(
    httpx_mock: HTTPXMock, dry_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_granules = 1 turns into the exact recorded request (page_size=1), and stops there.

    The recorded response says 218 hits and has a CMR-Search-After: no second page is
    asked for, no file is downloaded, and no token is made from the username/password.
    """
    monkeypatch.setenv("EDL_USER", "alice")
    monkeypatch.setenv("EDL_PASSWORD", "correct horse battery")
    httpx_mock.add_response(url=PAGE_URI, content=PAGE, headers=CMR_HEADERS)

    report = dry_run(
        source(f"""
        short_name = "{SHORT_NAME}"
        temporal = ["2020-01-01T00:00:00Z", "2022-12-31T23:59:59Z"]
        max_granules = 1
        username = "${{EDL_USER}}"
        password = "${{EDL_PASSWORD}}"
        """)
    )

    assert report.status == "dry-run"
    [asset] = report.assets
    assert (asset.status, asset.key, asset.url) == ("planned", f"{GRANULE}/{GRANULE}.nc", NC_URL)
    assert asset.size == 9695609  # SizeInBytes; Size is 9.246… MB
    assert asset.provenance is not None
    assert asset.provenance["concept_id"] == "G2546526969-POCLOUD"
    assert asset.provenance["collection_concept_id"] == "C2270392799-POCLOUD"
    assert asset.provenance["published"]["Checksum"] == {
        "Value": "9002febf17632e5921eba5b8f62237e6",
        "Algorithm": "MD5",
    }
    assert asset.provenance["query"]["temporal"] == ["2020-01-01T00:00:00Z", "2022-12-31T23:59:59Z"]
    [search] = httpx_mock.get_requests()
    assert "CMR-Search-After" not in search.headers
    assert "Authorization" not in search.headers


def test_pages_with_cmr_search_after_to_the_last_page(httpx_mock: HTTPXMock, dry_run: Run) -> None:
    """Page 1 is the recorded page; page 2 an edited copy of its item (next granule id,
    and a CMR-Search-After value advanced from the recorded one); page 3 is the recorded
    empty page (page_size=0 body), which ends the search.
    """
    after_2 = '["pocloud",1578355200000,2546527012]'
    pages = {
        None: (PAGE, CMR_HEADERS),
        SEARCH_AFTER: (page(next_granule(real_item()), hits=218), cmr_headers(218, after_2)),
        after_2: (EMPTY_BODY.encode(), cmr_headers(218)),
    }

    def cmr_search(request: httpx.Request) -> httpx.Response:
        body, headers = pages[request.headers.get("CMR-Search-After")]
        return httpx.Response(200, content=body, headers=headers)

    httpx_mock.add_callback(cmr_search, url=PAGE_URI, is_reusable=True)

    report = dry_run(
        source(f"""
        short_name = "{SHORT_NAME}"
        temporal = ["2020-01-01T00:00:00Z", "2022-12-31T23:59:59Z"]
        page_size = 1
        """)
    )

    sent = [r.headers.get("CMR-Search-After") for r in httpx_mock.get_requests()]
    assert sent == [None, '["pocloud",1577923200000,2546526969]', after_2]
    assert [a.key for a in report.assets] == [
        f"{GRANULE}/{GRANULE}.nc",
        "ssh_grids_v2205_2020010712/ssh_grids_v2205_2020010712.nc",
    ]
    assert {a.status for a in report.assets} == {"planned"}


def test_a_429_with_retry_after_on_the_search_is_waited_out_and_retried(
    httpx_mock: HTTPXMock, dry_run: Run
) -> None:
    httpx_mock.add_response(url=PAGE_URI, status_code=429, headers={"Retry-After": "1"})
    httpx_mock.add_response(url=PAGE_URI, content=PAGE, headers=CMR_HEADERS)

    started = time.monotonic()
    report = dry_run(
        source(f"""
        short_name = "{SHORT_NAME}"
        temporal = ["2020-01-01T00:00:00Z", "2022-12-31T23:59:59Z"]
        max_granules = 1
        """)
    )

    assert time.monotonic() - started >= 0.95  # Retry-After: 1, not the 0.05 s backoff
    assert len(httpx_mock.get_requests()) == 2
    assert [a.key for a in report.assets] == [f"{GRANULE}/{GRANULE}.nc"]


def test_a_cmr_error_body_becomes_the_source_s_error(httpx_mock: HTTPXMock, dry_run: Run) -> None:
    """CMR's documented error shape {"errors": [...]}; no error body is on record, so the
    message is written after CMR's wording for an invalid temporal value."""
    message = "temporal datetime is invalid: [2020-13-01T00:00:00Z] is not a valid datetime."
    url = search_url(short_name=SHORT_NAME, temporal__="2020-13-01T00:00:00Z,", page_size=2000)
    httpx_mock.add_response(url=url, status_code=400, json={"errors": [message]})

    report = dry_run(
        source(f"""
        short_name = "{SHORT_NAME}"
        temporal = ["2020-13-01T00:00:00Z", ""]
        """)
    )

    [failure] = report.assets
    assert failure.status == "failed"
    assert failure.error is not None
    assert "CMR search failed (HTTP 400)" in failure.error
    assert message in failure.error


def test_no_matching_granules_is_not_a_failure(httpx_mock: HTTPXMock, astroingest_run: Run) -> None:
    """The recorded empty page, its hits edited from 218 to 0 (it was a page_size=0 count)."""
    empty = json.loads(EMPTY_BODY) | {"hits": 0}
    httpx_mock.add_response(
        url=search_url(short_name=SHORT_NAME, version="2205", page_size=2000),
        json=empty,
        headers=cmr_headers(0),
    )

    report = astroingest_run(source(f'short_name = "{SHORT_NAME}"\nversion = "2205"\n'))

    assert report.status == "ok"
    assert report.assets == []


def test_search_parameters_use_cmr_s_spelling() -> None:
    config = cmr.CmrConfig(
        plugin="nasa.cmr",
        collection_concept_id=["C2270392799-POCLOUD", "C1996881146-POCLOUD"],
        provider="POCLOUD",
        temporal=[datetime(2020, 1, 1, tzinfo=UTC), date(2020, 1, 31)],
        bounding_box=[-180, -79.917, 180.0, 79.917],
    )

    assert cmr.search_params(config, 50) == [
        ("provider", "POCLOUD"),
        ("collection_concept_id[]", "C2270392799-POCLOUD"),
        ("collection_concept_id[]", "C1996881146-POCLOUD"),
        ("temporal[]", "2020-01-01T00:00:00Z,2020-01-31T23:59:59Z"),
        ("bounding_box", "-180,-79.917,180,79.917"),
        ("page_size", "50"),
    ]


def test_a_search_without_a_collection_or_granule_is_a_config_error(astroingest_run: Run) -> None:
    with pytest.raises(ConfigError, match="short_name, concept_id or collection_concept_id"):
        astroingest_run(source('provider = "POCLOUD"\n'))


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("page_size = 2001", "page_size"),
        ("bounding_box = [-180, 10, 180]", "bounding_box"),
        ("bounding_box = [-180, 50, 180, 10]", "south"),
        ('username = "alice"', "username and password together"),
    ],
)
def test_bad_settings_are_config_errors(astroingest_run: Run, line: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        astroingest_run(source(f'short_name = "{SHORT_NAME}"\n{line}\n'))


# -- downloads: checksums, sizes, the bearer token --------------------------------------------


def serve_granule(httpx_mock: HTTPXMock, item: dict[str, Any], **params: str | int) -> None:
    httpx_mock.add_response(
        url=search_url(concept_id="G2546526969-POCLOUD", page_size=2000, **params),
        content=page(item),
        headers=cmr_headers(1),
    )


def test_downloads_carry_the_bearer_token_and_match_the_published_md5_and_size(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)
    serve_granule(httpx_mock, item_for(NC))
    httpx_mock.add_response(url=NC_URL, content=NC, headers={"ETag": '"v1"'})

    report = astroingest_run(
        source("""
        concept_id = "G2546526969-POCLOUD"
        token = "${EARTHDATA_TOKEN}"
        """)
    )

    assert report.status == "ok", report.to_json()
    [asset] = report.assets
    assert (asset.status, asset.key) == ("stored", f"{GRANULE}/{GRANULE}.nc")
    assert asset.sha256 == hashlib.sha256(NC).hexdigest()
    assert stored(tmp_path, f"{GRANULE}/{GRANULE}.nc") == NC
    assert asset.provenance is not None
    assert asset.provenance["provider"] == "NASA Earthdata CMR"
    assert asset.provenance["endpoint"] == SEARCH
    assert asset.provenance["query"] == {"concept_id": "G2546526969-POCLOUD"}
    assert asset.provenance["collection"] == {"ShortName": SHORT_NAME, "Version": "2205"}
    [search] = requests_to(httpx_mock, SEARCH)
    assert "Authorization" not in search.headers  # public metadata: no token unless asked
    assert search.headers["Client-Id"] == "astroingest"
    [download] = requests_to(httpx_mock, NC_URL)
    assert download.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in report.to_json()


@pytest.mark.parametrize(
    ("algorithm", "published_for", "status", "error"),
    [
        ("MD5", NC, "stored", None),
        ("SHA-256", NC, "stored", None),
        ("SHA-512", NC, "stored", None),
        ("MD5", b"other bytes", "failed", "md5 mismatch"),
        ("SHA-256", b"other bytes", "failed", "sha256 mismatch"),
        ("SHA-512", b"other bytes", "failed", "sha512 mismatch"),
    ],
)
def test_the_published_checksum_is_verified(
    httpx_mock: HTTPXMock,
    astroingest_run: Run,
    algorithm: str,
    published_for: bytes,
    status: str,
    error: str | None,
) -> None:
    checksum = hashlib.new(algorithm.replace("-", "").lower(), published_for).hexdigest()
    serve_granule(httpx_mock, item_for(NC, algorithm=algorithm, checksum=checksum))
    httpx_mock.add_response(url=NC_URL, content=NC, is_reusable=True)

    report = astroingest_run(source('concept_id = "G2546526969-POCLOUD"\n'))

    [asset] = report.assets
    assert asset.status == status
    if error is None:
        assert asset.error is None
    else:
        assert asset.error is not None and error in asset.error
        assert asset.attempts == 2  # a mismatch is retried once (retries = 1), then fails


def test_a_size_other_than_the_published_byte_count_fails(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    serve_granule(httpx_mock, item_for(NC, size=len(NC) + 1))
    httpx_mock.add_response(url=NC_URL, content=NC, is_reusable=True)

    report = astroingest_run(source('concept_id = "G2546526969-POCLOUD"\n'))

    [asset] = report.assets
    assert asset.status == "failed"
    assert asset.error is not None and "size mismatch" in asset.error
    assert not (tmp_path / "astroingest-data" / "raw" / "ssh").exists()


def test_username_and_password_are_exchanged_for_a_token_at_the_edl_token_api(
    httpx_mock: HTTPXMock, astroingest_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token body has the shape EDL's token API records (access_token, token_type,
    expiration_date); search_with_token sends it to CMR too."""
    monkeypatch.setenv("EDL_USER", "alice")
    monkeypatch.setenv("EDL_PASSWORD", "correct horse battery")
    minted = "edl-token-from-password-42"
    httpx_mock.add_response(
        url=TOKEN_API,
        method="POST",
        json={"access_token": minted, "token_type": "Bearer", "expiration_date": "06/25/2024"},
    )
    serve_granule(httpx_mock, item_for(NC))
    httpx_mock.add_response(url=NC_URL, content=NC)

    report = astroingest_run(
        source("""
        concept_id = "G2546526969-POCLOUD"
        username = "${EDL_USER}"
        password = "${EDL_PASSWORD}"
        search_with_token = true
        """)
    )

    assert report.status == "ok", report.to_json()
    [login] = requests_to(httpx_mock, TOKEN_API)
    assert login.method == "POST"
    basic = base64.b64encode(b"alice:correct horse battery").decode()
    assert login.headers["Authorization"] == f"Basic {basic}"
    [search] = requests_to(httpx_mock, SEARCH)
    assert search.headers["Authorization"] == f"Bearer {minted}"
    [download] = requests_to(httpx_mock, NC_URL)
    assert download.headers["Authorization"] == f"Bearer {minted}"
    assert minted not in report.to_json()


def test_a_401_from_the_token_api_fails_the_source_without_the_password(
    httpx_mock: HTTPXMock, astroingest_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EDL's recorded answer to bad credentials (apis.md, from earthaccess cassettes)."""
    monkeypatch.setenv("EDL_PASSWORD", "wrong horse battery")
    httpx_mock.add_response(
        url=TOKEN_API,
        method="POST",
        status_code=401,
        json={"error": "invalid_credentials", "error_description": "Invalid user credentials"},
    )

    report = astroingest_run(
        source("""
        concept_id = "G2546526969-POCLOUD"
        username = "alice"
        password = "${EDL_PASSWORD}"
        """)
    )

    assert report.status == "failed"
    [failure] = report.assets
    assert failure.status == "failed"
    assert failure.error is not None
    assert "Earthdata Login rejected the username/password of user 'alice'" in failure.error
    assert "Invalid user credentials" in failure.error
    assert "wrong horse battery" not in report.to_json()
    assert len(httpx_mock.get_requests()) == 1  # no search without a token


# -- redirects: the token reaches Earthdata Login, never S3 ----------------------------------


def laads_item(body: bytes) -> dict[str, Any]:
    """The real LAADS item; only SizeInBytes edited (the real file is 69 MB)."""
    item: dict[str, Any] = json.loads(LAADS)["items"][0]
    item["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]["SizeInBytes"] = len(body)
    return item


AUTHORIZE = (
    "https://urs.earthdata.nasa.gov/oauth/authorize?client_id=laads&response_type=code"
    "&redirect_uri=https%3A%2F%2Fladsweb.modaps.eosdis.nasa.gov%2Flogin"
)
LOGIN_PAGE = "https://urs.earthdata.nasa.gov/home"
CALLBACK = "https://ladsweb.modaps.eosdis.nasa.gov/login?code=c0de"


def serve_edl_oauth_daac(httpx_mock: HTTPXMock) -> None:
    """LAADS-style download through EDL's OAuth authorize endpoint.

    The DAAC redirects a request without its session cookie to EDL; EDL redirects a
    request bearing the token back with a code (anything else goes to its login page);
    the DAAC's callback sets the session cookie and redirects to the file again.
    """

    def daac(request: httpx.Request) -> httpx.Response:
        if "session=ok" in request.headers.get("Cookie", ""):
            return httpx.Response(200, content=HDF4)
        return httpx.Response(302, headers={"Location": AUTHORIZE})

    def urs(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == f"Bearer {TOKEN}":
            return httpx.Response(302, headers={"Location": CALLBACK})
        return httpx.Response(302, headers={"Location": LOGIN_PAGE})

    httpx_mock.add_callback(daac, url=LAADS_URL, is_reusable=True)
    httpx_mock.add_callback(urs, url=AUTHORIZE, is_reusable=True)
    httpx_mock.add_response(
        url=LOGIN_PAGE, html="<html><title>Earthdata Login</title></html>", is_optional=True
    )
    httpx_mock.add_response(
        url=CALLBACK,
        status_code=302,
        headers={"Location": LAADS_URL, "Set-Cookie": "session=ok; Path=/"},
    )


def test_a_redirect_to_earthdata_login_still_gets_the_bearer_token(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real LAADS item's data link, downloaded through EDL's OAuth hop (see above)."""
    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)
    httpx_mock.add_response(
        url=search_url(concept_id="G1593453400-LAADS", page_size=2000),
        content=page(laads_item(HDF4)),
        headers=cmr_headers(1),
    )
    serve_edl_oauth_daac(httpx_mock)

    report = astroingest_run(
        source(
            """
        concept_id = "G1593453400-LAADS"
        token = "${EARTHDATA_TOKEN}"
        """,
            name="modis",
        )
    )

    assert report.status == "ok", report.to_json()
    [asset] = report.assets
    assert asset.key == "LAADS_4389864073/MYD021KM.A2019051.0430.006.2019051235515.hdf"
    assert stored(tmp_path, asset.key, name="modis") == HDF4
    bearer = f"Bearer {TOKEN}"
    [first, *_] = requests_to(httpx_mock, LAADS_URL)
    assert first.headers["Authorization"] == bearer
    authorized = [r.headers.get("Authorization") for r in requests_to(httpx_mock, AUTHORIZE)]
    assert authorized[-1] == bearer  # the hop that earned the code carried the token


def test_the_bearer_flow_resends_a_stripped_login_hop_when_httpx_follows_redirects(
    httpx_mock: HTTPXMock,
) -> None:
    """With a client that follows redirects itself (plain httpx), the token is stripped on
    the way to EDL: the flow notices the login page and sends that hop again with it."""
    serve_edl_oauth_daac(httpx_mock)
    auth = cmr.EarthdataBearer(TOKEN, "ladsweb.modaps.eosdis.nasa.gov")

    async def download() -> httpx.Response:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            return await client.get(LAADS_URL, auth=auth)

    response = asyncio.run(download())

    assert response.content == HDF4
    hops = [
        (r.url.host, r.url.path, r.headers.get("Authorization")) for r in httpx_mock.get_requests()
    ]
    bearer = f"Bearer {TOKEN}"
    laads_path = urlsplit(LAADS_URL).path
    assert hops == [
        ("ladsweb.modaps.eosdis.nasa.gov", laads_path, bearer),
        ("urs.earthdata.nasa.gov", "/oauth/authorize", None),  # stripped by httpx
        ("urs.earthdata.nasa.gov", "/home", None),  # the login page
        ("urs.earthdata.nasa.gov", "/oauth/authorize", bearer),  # sent again, with it
        ("ladsweb.modaps.eosdis.nasa.gov", "/login", None),
        ("ladsweb.modaps.eosdis.nasa.gov", laads_path, None),
    ]


def test_a_redirect_to_a_presigned_s3_url_does_not_get_the_token(
    httpx_mock: HTTPXMock, astroingest_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cloud DAAC answers the token with a 307 to a presigned S3 URL; S3 must not see it."""
    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)
    presigned = (
        "https://podaac-ops-cumulus-protected.s3.us-west-2.amazonaws.com/"
        f"{SHORT_NAME}/{GRANULE}.nc?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=5ign"
    )
    serve_granule(httpx_mock, item_for(NC))
    httpx_mock.add_response(
        url=NC_URL,
        status_code=307,
        headers={"Location": presigned},
        match_headers={"Authorization": f"Bearer {TOKEN}"},
    )
    httpx_mock.add_response(url=presigned, content=NC)

    report = astroingest_run(
        source("""
        concept_id = "G2546526969-POCLOUD"
        token = "${EARTHDATA_TOKEN}"
        """)
    )

    assert report.status == "ok", report.to_json()
    [s3] = requests_to(httpx_mock, presigned.split("?")[0])
    assert "Authorization" not in s3.headers


@pytest.mark.parametrize(
    "downgrade",
    [
        NC_URL.replace("https://", "http://"),  # the same host, down to plain http
        "http://archive.podaac.earthdata.nasa.gov:8080/" + NC_URL.split("/", 3)[3],
    ],
    ids=["same-host", "same-host-other-port"],
)
def test_the_token_is_not_sent_when_an_https_link_redirects_down_to_http(
    httpx_mock: HTTPXMock, astroingest_run: Run, monkeypatch: pytest.MonkeyPatch, downgrade: str
) -> None:
    """A DAAC (misconfigured, or an attacker on its path) answers the https link with a
    redirect to plain http on its own host: that hop must not carry the token."""
    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)
    serve_granule(httpx_mock, item_for(NC))
    httpx_mock.add_response(url=NC_URL, status_code=302, headers={"Location": downgrade})
    httpx_mock.add_response(url=downgrade, content=NC)

    report = astroingest_run(
        source("""
        concept_id = "G2546526969-POCLOUD"
        token = "${EARTHDATA_TOKEN}"
        """)
    )

    assert report.status == "ok", report.to_json()
    [https_hop] = httpx_mock.get_requests(url=NC_URL)
    assert https_hop.headers["Authorization"] == f"Bearer {TOKEN}"
    [http_hop] = httpx_mock.get_requests(url=downgrade)
    assert "Authorization" not in http_hop.headers


def test_a_plain_http_link_goes_without_the_token_until_it_is_upgraded_to_https(
    httpx_mock: HTTPXMock, astroingest_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real POCLOUD item with its .nc link edited to http://; the DAAC upgrades it to
    https (a 301, as web servers do), where the token goes again."""
    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)
    http_url = NC_URL.replace("https://", "http://")
    item = item_for(NC)
    for link in item["umm"]["RelatedUrls"]:
        if link["URL"] == NC_URL:
            link["URL"] = http_url
    serve_granule(httpx_mock, item)
    httpx_mock.add_response(url=http_url, status_code=301, headers={"Location": NC_URL})
    httpx_mock.add_response(
        url=NC_URL, content=NC, match_headers={"Authorization": f"Bearer {TOKEN}"}
    )

    report = astroingest_run(
        source("""
        concept_id = "G2546526969-POCLOUD"
        token = "${EARTHDATA_TOKEN}"
        """)
    )

    assert report.status == "ok", report.to_json()
    [plain] = httpx_mock.get_requests(url=http_url)
    assert "Authorization" not in plain.headers
    [upgraded] = httpx_mock.get_requests(url=NC_URL)
    assert upgraded.headers["Authorization"] == f"Bearer {TOKEN}"


def test_search_with_token_refuses_a_plain_http_cmr(
    httpx_mock: HTTPXMock, astroingest_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror configured as http://: the token would cross the network in clear text."""
    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)

    report = astroingest_run(
        source("""
        base_url = "http://cmr.example.org/search"
        concept_id = "G2546526969-POCLOUD"
        token = "${EARTHDATA_TOKEN}"
        search_with_token = true
        """)
    )

    [failure] = report.assets
    assert failure.status == "failed"
    assert "search_with_token needs an https base_url" in (failure.error or "")
    assert httpx_mock.get_requests() == []


def test_a_token_exchanged_for_username_and_password_is_scrubbed_by_the_engine(
    httpx_mock: HTTPXMock, astroingest_host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token body as in the exchange test above; the engine's redactor must learn the
    minted token, so that no log line, error or report can show it."""
    monkeypatch.setenv("EDL_PASSWORD", "correct horse battery")
    minted = "edl-token-minted-at-run-time-7"
    httpx_mock.add_response(
        url=TOKEN_API,
        method="POST",
        json={"access_token": minted, "token_type": "Bearer", "expiration_date": "06/25/2024"},
    )
    serve_granule(httpx_mock, item_for(NC))
    httpx_mock.add_response(url=NC_URL, content=NC)
    path = tmp_path / "sources.toml"
    path.write_text(
        source("""
        concept_id = "G2546526969-POCLOUD"
        username = "alice"
        password = "${EDL_PASSWORD}"
        """)
    )
    config = load_config(path, astroingest_host)
    redactor = Redactor(config.secrets)
    engine = Engine(config, astroingest_host, LogProgress(), redactor)

    report = asyncio.run(engine.run(RunOptions()))

    assert report.status == "ok", report.to_json()
    assert redactor(f"Token {minted} does not exist") == "Token *** does not exist"


def test_the_bearer_flow_sends_the_token_over_https_or_loopback_only() -> None:
    auth = cmr.EarthdataBearer(TOKEN, "archive.podaac.earthdata.nasa.gov")
    sent = {}
    for url in (
        NC_URL,
        NC_URL.replace("https://", "http://"),
        "http://127.0.0.1:8080/file.nc",
        "https://urs.earthdata.nasa.gov/oauth/authorize",
        "http://urs.earthdata.nasa.gov/oauth/authorize",
    ):
        request = httpx.Request("GET", url, headers={"Authorization": "Bearer stale"})
        sent[url] = next(auth.auth_flow(request)).headers.get("Authorization")
    loopback = cmr.EarthdataBearer(TOKEN, "127.0.0.1")
    request = httpx.Request("GET", "http://127.0.0.1:8080/file.nc")
    assert next(loopback.auth_flow(request)).headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent == {
        NC_URL: f"Bearer {TOKEN}",
        NC_URL.replace("https://", "http://"): None,
        "http://127.0.0.1:8080/file.nc": None,  # loopback, but not a trusted host
        "https://urs.earthdata.nasa.gov/oauth/authorize": f"Bearer {TOKEN}",
        "http://urs.earthdata.nasa.gov/oauth/authorize": None,
    }


# -- granule items to assets (no HTTP) ---------------------------------------------------------


def shared(*link_types: str) -> cmr.GranuleContext:
    log = logging.getLogger("test.nasa.cmr")
    return cmr.GranuleContext(SEARCH, {}, link_types or ("GET DATA",), log)


def test_the_laads_item_becomes_one_hdf_asset_with_its_byte_size_and_doi() -> None:
    """LAADS names its one file entry "Not provided": it still describes the one data file."""
    [asset] = cmr.granule_assets(json.loads(LAADS)["items"][0], shared())

    assert asset.url == LAADS_URL
    assert asset.key == "LAADS_4389864073/MYD021KM.A2019051.0430.006.2019051235515.hdf"
    assert asset.size == 69035465
    assert (asset.md5, asset.sha256, dict(asset.checksums)) == (None, None, {})
    assert asset.media_type == "application/x-hdfeos"
    assert asset.provenance["doi"] == "10.5067/MODIS/MYD021KM.006"
    assert asset.provenance["producer_granule_id"] == "MYD021KM.A2019051.0430.006.2019051235515.hdf"
    assert asset.provenance["published"]["SizeUnit"] == "MB"


def test_s3_links_are_skipped_and_extra_link_types_bring_sidecars() -> None:
    context = shared("GET DATA", "GET DATA VIA DIRECT ACCESS", "EXTENDED METADATA")

    assets = cmr.granule_assets(real_item(), context)

    assert [(a.url.rsplit("/", 1)[1], a.size, a.md5) for a in assets] == [
        (f"{GRANULE}.nc.md5", 63, "b0c271019f89f876b2d3c0a9c46b8f77"),
        (f"{GRANULE}.nc", 9695609, "9002febf17632e5921eba5b8f62237e6"),
    ]
    assert all(a.url.startswith("https://") for a in assets)
    assert context.non_http == 2


@pytest.mark.parametrize(
    ("entry", "size"),
    [
        ({"Size": 9.246453285217285, "SizeUnit": "MB"}, None),  # rounded: provenance only
        ({"Size": 63, "SizeUnit": "B"}, 63),
        ({"Size": 63.0, "SizeUnit": "B"}, 63),
        ({"Size": 63.5, "SizeUnit": "B"}, None),
        ({"Size": 0.061, "SizeUnit": "KB", "SizeInBytes": 63}, 63),
    ],
)
def test_only_exact_byte_counts_become_the_asset_size(
    entry: dict[str, Any], size: int | None
) -> None:
    facts = cmr.published({"Name": "f.nc", **entry})
    assert facts.size == size
    assert facts.record["Size"] == entry["Size"]


@pytest.mark.parametrize(
    ("algorithm", "value", "where"),
    [
        ("MD5", "9002FEBF17632E5921EBA5B8F62237E6", ("md5", "9002febf17632e5921eba5b8f62237e6")),
        ("SHA-256", "ab" * 32, ("sha256", "ab" * 32)),
        ("SHA-1", "cd" * 20, ("checksums", {"sha1": "cd" * 20})),
        ("SHA-512", "ef" * 64, ("checksums", {"sha512": "ef" * 64})),
        ("Adler-32", "0a1b2c3d", None),  # not verifiable by the engine: provenance only
        ("MD5", "not-a-digest", None),
    ],
)
def test_published_checksums_map_to_the_engine_s_algorithms(
    algorithm: str, value: str, where: tuple[str, Any] | None
) -> None:
    facts = cmr.published({"Name": "f.nc", "Checksum": {"Value": value, "Algorithm": algorithm}})
    found = {
        k: v
        for k, v in (("md5", facts.md5), ("sha256", facts.sha256), ("checksums", facts.checksums))
        if v
    }
    assert found == (dict([where]) if where else {})
    assert facts.record["Checksum"]["Algorithm"] == algorithm


def test_the_bearer_auth_never_shows_its_token() -> None:
    auth = cmr.EarthdataBearer(TOKEN, "archive.podaac.earthdata.nasa.gov")
    assert TOKEN not in repr(auth)
    request = httpx.Request("GET", NC_URL)
    flow = auth.auth_flow(request)
    assert next(flow).headers["Authorization"] == f"Bearer {TOKEN}"
