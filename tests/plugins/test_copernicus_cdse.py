"""``plugin = "copernicus.cdse"``: the CDSE OData catalogue and product downloads, run through
the real engine with pytest-httpx serving the recorded payloads at the real CDSE URLs.

Fixtures (tests/fixtures/copernicus, see PROVENANCE.md there): the S1 page with
``@odata.count``/``@odata.nextLink`` (CDSETool), the S2 L1C page with checksums and footprints
(eodag), and the identity server's OpenID configuration (CDSETool). Where a test needs a shape
no recording has (a last page, bodies matching the published checksums, token responses,
which are never recorded because they are secrets), its docstring says what was derived.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import json
import re
import textwrap
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import blake3
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
from astroingest_plugins.copernicus import cdse

Run = Callable[..., RunReport]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "copernicus"
S1_PAGE = "cdse_odata_products_s1_page1_count.json"
S2_PAGE = "cdse_odata_products_s2_l1c_expand_attributes_assets.json"
OPENID = "cdse_identity_openid_configuration.json"

CATALOGUE = "https://catalogue.dataspace.copernicus.eu/odata/v1"
PRODUCTS = f"{CATALOGUE}/Products"
DOWNLOAD = "https://download.dataspace.copernicus.eu/odata/v1"
IDENTITY = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect"
TOKEN_URL = f"{IDENTITY}/token"
LOGOUT_URL = f"{IDENTITY}/logout"
USER = "alice@example.org"
PASSWORD = "s3cret-Pa55word"

FAST = """
[defaults]
backoff = 0.01
max_backoff = 0.02
read_timeout = 5
"""


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def product_zip(name: str) -> bytes:
    """A small real zip standing in for a product's $value."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}/manifest.safe", f"<manifest product='{name}'/>\n")
    return buffer.getvalue()


def publish(product: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The recorded product with ContentLength and Checksum values describing ``body``.

    Only those values change (Algorithm names and ChecksumDates stay as recorded): the real
    products are gigabytes, so the test serves small zips and says what they hash to.
    """
    edited = copy.deepcopy(product)
    edited["ContentLength"] = len(body)
    digests = {"MD5": hashlib.md5(body).hexdigest(), "BLAKE3": blake3.blake3(body).hexdigest()}
    for entry in edited["Checksum"]:
        entry["Value"] = digests[entry["Algorithm"]]
    return edited


def value_url(product: dict[str, Any]) -> str:
    return f"{DOWNLOAD}/Products({product['Id']})/$value"


def zip_name(product: dict[str, Any]) -> str:
    return f"{product['Name']}.zip"


def source(
    collection: str, start: str, end: str, *extra: str, defaults: str = "retries = 0"
) -> str:
    lines = "\n".join(extra)
    return (
        textwrap.dedent(f"""\
        {FAST}
        {defaults}
        [sources.cdse]
        plugin = "copernicus.cdse"
        collection = "{collection}"
        start = {start}
        end = {end}
        username = "{USER}"
        password = "${{CDSE_PASSWORD}}"
        """)
        + lines
        + "\n"
    )


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDSE_PASSWORD", PASSWORD)


class Clock:
    """time.monotonic for the token manager, moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cdse, "_clock", fake)
    return fake


class Identity:
    """The Keycloak token endpoint: grants a-1/r-1, a-2/r-2… (the shape of Keycloak's JSON).

    No real token response is recorded anywhere (they are secrets), so this one is built
    from the documented fields: access_token, expires_in (600 s), refresh_token,
    refresh_expires_in (3600 s), token_type.
    """

    def __init__(self, *, refuse_refresh: bool = False, prefix: str = "") -> None:
        self.refuse_refresh = refuse_refresh
        self.prefix = prefix  # real tokens are long JWTs; "a-1" is below the redactor's minimum
        self.forms: list[dict[str, str]] = []
        self.issued = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        # A round trip, as over the network: concurrent downloads pile up behind a renewal.
        await asyncio.sleep(0.02)
        form = {k: v[-1] for k, v in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        refused = form.get("grant_type") == "refresh_token" and self.refuse_refresh
        if refused or form.get("grant_type") not in ("password", "refresh_token"):
            error = {"error": "invalid_grant", "error_description": "Token is not active"}
            return httpx.Response(400, json=error)
        self.issued += 1
        return httpx.Response(
            200,
            json={
                "access_token": f"{self.prefix}a-{self.issued}",
                "expires_in": 600,
                "refresh_expires_in": 3600,
                "refresh_token": f"{self.prefix}r-{self.issued}",
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": "AUDIENCE_PUBLIC openid email profile user-context",
            },
        )

    @property
    def grants(self) -> list[str]:
        return [form["grant_type"] for form in self.forms]


def serve_identity(httpx_mock: HTTPXMock, identity: Identity, *, logout: bool = True) -> None:
    httpx_mock.add_callback(identity, url=TOKEN_URL, method="POST", is_reusable=True)
    if logout:
        httpx_mock.add_response(url=LOGOUT_URL, method="POST", status_code=204)


def serve_products(httpx_mock: HTTPXMock, products: list[dict[str, Any]]) -> dict[str, bytes]:
    bodies = {}
    for product in products:
        body = product_zip(product["Name"])
        bodies[product["Id"]] = body
        httpx_mock.add_response(
            url=value_url(product), content=body, headers={"Content-Type": "application/zip"}
        )
    return bodies


def bearers(httpx_mock: HTTPXMock, url: str) -> list[str | None]:
    return [r.headers.get("Authorization") for r in httpx_mock.get_requests(url=url)]


def stored(tmp_path: Path, name: str = "cdse") -> dict[str, bytes]:
    root = tmp_path / "astroingest-data" / "raw" / name
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".astroingest-pending" not in p.parts
    }


def dry_run(host: Host, tmp_path: Path, text: str) -> RunReport:
    """What ``astroingest run --dry-run`` does (astroingest_run has no dry-run switch)."""
    path = tmp_path / "sources.toml"
    path.write_text(text)
    config = load_config(path, host)
    engine = Engine(config, host, LogProgress(), Redactor(config.secrets))
    return asyncio.run(engine.run(RunOptions(dry_run=True)))


def s2_query(area_clause: str) -> dict[str, str]:
    product_type = (
        "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' and "
        "att/OData.CSC.StringAttribute/Value eq 'S2MSI1C')"
    )
    return {
        "$filter": " and ".join(
            [
                "Collection/Name eq 'SENTINEL-2'",
                product_type,
                f"OData.CSC.Intersects(area=geography'SRID=4326;{area_clause}')",
                "ContentDate/Start ge 2020-08-08T00:00:00.000Z",
                "ContentDate/Start lt 2020-08-16T00:00:00.000Z",
            ]
        ),
        "$orderby": "ContentDate/Start asc",
        "$top": "2",
        "$count": "true",
    }


# -- endpoints ---------------------------------------------------------------------------------


def test_default_endpoints_are_the_ones_the_identity_server_publishes() -> None:
    openid = fixture(OPENID)
    assert openid["token_endpoint"] == cdse.DEFAULT_TOKEN_URL
    assert {"password", "refresh_token"} <= set(openid["grant_types_supported"])
    # logout() derives the end-session endpoint from the token URL.
    assert (
        cdse.DEFAULT_TOKEN_URL.removesuffix("/token") + "/logout" == openid["end_session_endpoint"]
    )


# -- searching -----------------------------------------------------------------------------------


def derived_last_page(page: dict[str, Any]) -> dict[str, Any]:
    """The next day's page, DERIVED from the recorded page 1.

    Edits: ``@odata.count`` and ``@odata.nextLink`` removed (CDSETool's recorded last page of
    the same query, odata_page_5.json, has neither), and the first 7 products re-identified
    as other products: Id -> uuid5(Id), "20140406" -> "20140407" in Name and ContentDate.
    """
    products = []
    for product in copy.deepcopy(page["value"][:7]):
        product["Id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, product["Id"]))
        product["Name"] = product["Name"].replace("20140406", "20140407")
        for edge in ("Start", "End"):
            product["ContentDate"][edge] = product["ContentDate"][edge].replace(
                "2014-04-06", "2014-04-07"
            )
        products.append(product)
    return {"@odata.context": page["@odata.context"], "value": products}


def test_dry_run_pages_through_next_links_to_the_last_page_without_logging_in(
    httpx_mock: HTTPXMock, astroingest_host: Host, tmp_path: Path
) -> None:
    """Page 1 is the recorded S1 page; page 2 is derived from it (see derived_last_page)."""
    page1 = fixture(S1_PAGE)
    page2 = derived_last_page(page1)
    query = {
        "$filter": "Collection/Name eq 'SENTINEL-1' and "
        "ContentDate/Start ge 2014-04-05T00:00:00.000Z and "
        "ContentDate/Start lt 2014-04-14T00:00:00.000Z",
        "$orderby": "ContentDate/Start asc",
        "$top": "10",
        "$count": "true",
    }
    httpx_mock.add_response(url=PRODUCTS, match_params=query, json=page1)
    httpx_mock.add_response(url=page1["@odata.nextLink"], json=page2)

    text = source(
        "SENTINEL-1", "2014-04-05T00:00:00Z", '"2014-04-14T00:00:00+00:00"', "page_size = 10"
    )
    report = dry_run(astroingest_host, tmp_path, text)

    assert report.status == "dry-run"
    expected = [f"SENTINEL-1/{zip_name(p)}" for p in page1["value"] + page2["value"]]
    assert [a.key for a in report.assets] == expected
    assert len(expected) == 17 and len(set(expected)) == 17
    assert {a.status for a in report.assets} == {"planned"}
    # Products without an extension (orbit files) and .SAFE folders both come zipped.
    assert (
        "SENTINEL-1/S1A_OPER_AUX_GNSSRD_POD__20171211T085403_V20140406T011619_20140406T235939.zip"
        in expected
    )
    first = report.assets[0]
    assert first.url == f"{DOWNLOAD}/Products(67360f3a-f36b-11ef-9d3f-0050561a7772)/$value"
    assert first.size == 728976
    assert first.provenance is not None
    assert first.provenance["product_id"] == "67360f3a-f36b-11ef-9d3f-0050561a7772"
    assert first.provenance["product_name"] == page1["value"][0]["Name"]
    assert first.provenance["content_date"] == page1["value"][0]["ContentDate"]
    assert first.provenance["query"] == {"$filter": query["$filter"], "$orderby": query["$orderby"]}
    assert first.provenance["attribution"] == "Copernicus Sentinel data 2014"
    assert "1159/2013" in first.provenance["licence"]
    # Only the two catalogue pages were asked for: no login in a dry run.
    assert [r.method for r in httpx_mock.get_requests()] == ["GET", "GET"]


@pytest.mark.parametrize(
    ("area", "clause"),
    [
        (
            "[137.7729, 13.1342, 153.7491, 23.886]",
            "POLYGON((137.7729 13.1342,153.7491 13.1342,153.7491 23.886,137.7729 23.886,"
            "137.7729 13.1342))",
        ),
        (  # the polygon of eodag's recorded query, as a WKT string: sent as given
            '"POLYGON ((137.7729 13.1342, 137.7729 23.8860, 153.7491 23.8860, '
            '153.7491 13.1342, 137.7729 13.1342))"',
            "POLYGON ((137.7729 13.1342, 137.7729 23.8860, 153.7491 23.8860, "
            "153.7491 13.1342, 137.7729 13.1342))",
        ),
    ],
    ids=["bbox", "wkt"],
)
def test_lands_products_verified_with_the_bearer_token_then_logs_out(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, area: str, clause: str
) -> None:
    """The recorded S2 page (ContentLength/Checksum values edited to describe test zips).

    max_products = 2 stops the search before the page's nextLink is followed.
    """
    page = fixture(S2_PAGE)
    bodies = {p["Id"]: product_zip(p["Name"]) for p in page["value"]}
    page["value"] = [publish(p, bodies[p["Id"]]) for p in page["value"]]
    identity = Identity()
    serve_identity(httpx_mock, identity)
    httpx_mock.add_response(url=PRODUCTS, match_params=s2_query(clause), json=page)
    for product in page["value"]:
        httpx_mock.add_response(url=value_url(product), content=bodies[product["Id"]])

    report = astroingest_run(
        source(
            "SENTINEL-2",
            "2020-08-08",
            "2020-08-16T00:00:00Z",
            'product_type = "S2MSI1C"',
            f"area = {area}",
            "max_products = 2",
            "page_size = 2",
        )
    )

    assert report.status == "ok", report.assets
    assert stored(tmp_path) == {f"SENTINEL-2/{zip_name(p)}": bodies[p["Id"]] for p in page["value"]}
    for result in report.assets:
        assert result.status == "stored"
        assert result.validator == "zip" and result.quality == 1.0
        assert result.provenance is not None
        assert result.provenance["footprint"].startswith("geography'SRID=4326;POLYGON ((")
        assert result.provenance["product_type"] == "S2MSI1C"
    assert identity.forms[0] == {
        "grant_type": "password",
        "username": USER,
        "password": PASSWORD,
        "client_id": "cdse-public",
    }
    for product in page["value"]:
        assert bearers(httpx_mock, value_url(product)) == ["Bearer a-1"]
    [logout] = httpx_mock.get_requests(url=LOGOUT_URL)
    assert parse_qs(logout.content.decode()) == {
        "client_id": ["cdse-public"],
        "refresh_token": ["r-1"],
    }


@pytest.mark.parametrize("algorithm", ["MD5", "BLAKE3"])
def test_a_checksum_mismatch_fails_the_product(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, algorithm: str
) -> None:
    """The S2 page as above; the second product's published value for one algorithm is
    then changed (its other checksum and its size still match the body)."""
    page = fixture(S2_PAGE)
    bodies = {p["Id"]: product_zip(p["Name"]) for p in page["value"]}
    page["value"] = [publish(p, bodies[p["Id"]]) for p in page["value"]]
    good, bad = page["value"]
    [entry] = [c for c in bad["Checksum"] if c["Algorithm"] == algorithm]
    published = entry["Value"] = "0" * len(entry["Value"])
    serve_identity(httpx_mock, Identity())
    httpx_mock.add_response(url=re.compile(re.escape(PRODUCTS) + r"\?.*"), json=page)
    for product in page["value"]:
        httpx_mock.add_response(url=value_url(product), content=bodies[product["Id"]])

    report = astroingest_run(source("SENTINEL-2", "2020-08-08", "2020-08-16", "max_products = 2"))

    results = {r.key: r for r in report.assets}
    assert results[f"SENTINEL-2/{zip_name(good)}"].status == "stored"
    failed = results[f"SENTINEL-2/{zip_name(bad)}"]
    assert failed.status == "failed"
    actual = {"MD5": hashlib.md5, "BLAKE3": blake3.blake3}[algorithm](bodies[bad["Id"]])
    assert failed.error == (
        f"{algorithm.lower()} mismatch: got {actual.hexdigest()}, expected {published}"
    )
    assert stored(tmp_path) == {f"SENTINEL-2/{zip_name(good)}": bodies[good["Id"]]}


def test_429_from_the_catalogue_and_the_download_host_is_retried(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """CDSE answers 429 over its quotas without a documented Retry-After (here: none, then
    0); the S2 page is edited as above, first product only."""
    page = fixture(S2_PAGE)
    product = page["value"][0]
    body = product_zip(product["Name"])
    page["value"] = [publish(product, body)]
    serve_identity(httpx_mock, Identity())
    catalogue = re.compile(re.escape(PRODUCTS) + r"\?.*")
    httpx_mock.add_response(url=catalogue, status_code=429, text="Too Many Requests")
    httpx_mock.add_response(url=catalogue, json=page)
    httpx_mock.add_response(url=value_url(product), status_code=429, headers={"Retry-After": "0"})
    httpx_mock.add_response(url=value_url(product), content=body)

    report = astroingest_run(
        source("SENTINEL-2", "2020-08-08", "2020-08-16", "max_products = 1", defaults="retries = 2")
    )

    [result] = report.assets
    assert result.status == "stored" and result.attempts == 2
    assert stored(tmp_path) == {f"SENTINEL-2/{zip_name(product)}": body}
    assert len(httpx_mock.get_requests(url=catalogue)) == 2


# -- tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "refuse_refresh", "grants", "bearer"),
    [
        pytest.param(500.0, False, ["password"], "a-1", id="still-fresh"),
        pytest.param(
            545.0, False, ["password", "refresh_token"], "a-2", id="renewed-before-expiry"
        ),
        pytest.param(
            545.0, True, ["password", "refresh_token", "password"], "a-2", id="refresh-refused"
        ),
        pytest.param(3700.0, False, ["password", "password"], "a-2", id="refresh-token-expired"),
    ],
)
def test_four_concurrent_downloads_renew_an_expiring_token_once(
    httpx_mock: HTTPXMock,
    astroingest_run: Run,
    clock: Clock,
    now: float,
    refuse_refresh: bool,
    grants: list[str],
    bearer: str,
) -> None:
    """The recorded S1 page, its first four products edited to describe test zips.

    Tokens live 600 s (refresh tokens 3600 s); the clock jumps to ``now`` between the plan's
    login and the downloads. With less than 60 s left the token is refreshed first, once for
    all four downloads; a refused refresh, or an expired refresh token, means a new login.
    """
    page = fixture(S1_PAGE)
    products = page["value"][:4]
    bodies = {p["Id"]: product_zip(p["Name"]) for p in products}
    page["value"][:4] = [publish(p, bodies[p["Id"]]) for p in products]
    identity = Identity(refuse_refresh=refuse_refresh)
    serve_identity(httpx_mock, identity)

    def catalogue(request: httpx.Request) -> httpx.Response:
        clock.now = now
        return httpx.Response(200, json=page)

    httpx_mock.add_callback(catalogue, url=re.compile(re.escape(PRODUCTS) + r"\?.*"))
    for product in page["value"][:4]:
        httpx_mock.add_response(url=value_url(product), content=bodies[product["Id"]])

    report = astroingest_run(
        source("SENTINEL-1", "2014-04-05", "2014-04-14", "max_products = 4", "concurrency = 4")
    )

    assert report.totals.stored == 4, report.assets
    assert identity.grants == grants
    if "refresh_token" in grants:
        assert identity.forms[1] == {
            "grant_type": "refresh_token",
            "refresh_token": "r-1",
            "client_id": "cdse-public",
        }
    for product in page["value"][:4]:
        assert bearers(httpx_mock, value_url(product)) == [f"Bearer {bearer}"]
    [logout] = httpx_mock.get_requests(url=LOGOUT_URL)
    assert parse_qs(logout.content.decode())["refresh_token"] == [f"r-{bearer[-1]}"]


def test_a_refused_login_fails_the_source_with_a_clear_error_without_the_password(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Keycloak's answer to a wrong password (401 + invalid_grant), built from its documented
    error shape; the catalogue is never queried."""
    httpx_mock.add_response(
        url=TOKEN_URL,
        method="POST",
        status_code=401,
        json={"error": "invalid_grant", "error_description": "Invalid user credentials"},
    )

    report = astroingest_run(source("SENTINEL-2", "2020-08-08", "2020-08-16", "max_products = 1"))

    [failure] = report.assets
    assert failure.status == "failed" and failure.key is None
    assert failure.error == (
        f"planning failed: CDSE: login as '{USER}' at identity.dataspace.copernicus.eu was "
        "refused (HTTP 401: Invalid user credentials): "
        "check username and password (an account with two-factor authentication cannot "
        "log in with a password alone)"
    )
    # The redactor would have turned a leaked password into "***": neither may appear.
    assert PASSWORD not in failure.error and "***" not in failure.error
    assert len(httpx_mock.get_requests()) == 1


def test_a_token_the_server_rejects_is_renewed_and_the_download_retried_once(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """A session ended server-side: the first download answers 401 to a token that still
    had minutes to live (the S2 page, edited as above, first product only)."""
    page = fixture(S2_PAGE)
    product = page["value"][0]
    body = product_zip(product["Name"])
    page["value"] = [publish(product, body)]
    identity = Identity()
    serve_identity(httpx_mock, identity)
    httpx_mock.add_response(url=re.compile(re.escape(PRODUCTS) + r"\?.*"), json=page)

    def download(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == "Bearer a-2":
            return httpx.Response(200, content=body)
        return httpx.Response(401, json={"detail": "Expired signature!"})

    httpx_mock.add_callback(download, url=value_url(product), is_reusable=True)

    report = astroingest_run(source("SENTINEL-2", "2020-08-08", "2020-08-16", "max_products = 1"))

    assert report.totals.stored == 1, report.assets
    assert bearers(httpx_mock, value_url(product)) == ["Bearer a-1", "Bearer a-2"]
    assert identity.grants == ["password", "refresh_token"]


def test_every_access_and_refresh_token_obtained_is_scrubbed_by_the_engine(
    httpx_mock: HTTPXMock, astroingest_host: Host, tmp_path: Path, clock: Clock
) -> None:
    """The login's tokens and the refreshed ones (the clock jumps to 545 s, as in the renewal
    test above): the engine's redactor learns each one when it is obtained, so no log line,
    error or report shows it (the S2 page, edited as above, first product only)."""
    page = fixture(S2_PAGE)
    product = page["value"][0]
    body = product_zip(product["Name"])
    page["value"] = [publish(product, body)]
    identity = Identity(prefix="eyJhbGciOiJSUzI1NiJ9.")
    serve_identity(httpx_mock, identity)

    def catalogue(request: httpx.Request) -> httpx.Response:
        clock.now = 545.0
        return httpx.Response(200, json=page)

    httpx_mock.add_callback(catalogue, url=re.compile(re.escape(PRODUCTS) + r"\?.*"))
    httpx_mock.add_response(url=value_url(product), content=body)
    path = tmp_path / "sources.toml"
    path.write_text(source("SENTINEL-2", "2020-08-08", "2020-08-16", "max_products = 1"))
    config = load_config(path, astroingest_host)
    redactor = Redactor(config.secrets)
    engine = Engine(config, astroingest_host, LogProgress(), redactor)

    report = asyncio.run(engine.run(RunOptions()))

    assert report.totals.stored == 1, report.assets
    assert identity.grants == ["password", "refresh_token"]
    for token in ("a-1", "r-1", "a-2", "r-2"):
        assert redactor(f"token {identity.prefix}{token} expired") == "token *** expired"


def test_a_token_host_sharing_the_download_budget_does_not_deadlock(
    httpx_mock: HTTPXMock, astroingest_run: Run, clock: Clock
) -> None:
    """Identity and downloads behind one host with one connection: the download holds that
    connection while its token is renewed, so the renewal must not wait for another one."""
    host = "https://cdse.example.org"
    token_url = f"{host}/auth/realms/CDSE/protocol/openid-connect/token"
    page = fixture(S2_PAGE)
    product = page["value"][0]
    body = product_zip(product["Name"])
    page["value"] = [publish(product, body)]
    identity = Identity()
    httpx_mock.add_callback(identity, url=token_url, method="POST", is_reusable=True)
    httpx_mock.add_response(url=token_url.replace("/token", "/logout"), method="POST")

    def catalogue(request: httpx.Request) -> httpx.Response:
        clock.now = 590.0
        return httpx.Response(200, json=page)

    httpx_mock.add_callback(catalogue, url=re.compile(re.escape(PRODUCTS) + r"\?.*"))
    url = f"{host}/odata/v1/Products({product['Id']})/$value"
    httpx_mock.add_response(url=url, content=body)

    report = astroingest_run(
        source(
            "SENTINEL-2",
            "2020-08-08",
            "2020-08-16",
            f'token_url = "{token_url}"',
            f'download_url = "{host}/odata/v1"',
            "max_products = 1",
            defaults="retries = 0\nasset_timeout = 10",
        )
        + '\n[hosts."cdse.example.org"]\nconnections = 1\n'
    )

    assert report.totals.stored == 1, report.assets
    assert identity.grants == ["password", "refresh_token"]
    assert bearers(httpx_mock, url) == ["Bearer a-2"]


# -- redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "trusted"),
    [
        ("https://zipper.dataspace.copernicus.eu/odata/v1/Products(x)/$value", True),
        ("https://mirror.example.org/products/x.zip", False),
        ("http://zipper.dataspace.copernicus.eu/odata/v1/Products(x)/$value", False),
    ],
    ids=["zipper", "foreign-host", "downgrade-to-http"],
)
def test_the_bearer_token_follows_redirects_to_the_data_space_only(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, target: str, trusted: bool
) -> None:
    """The download host redirects (as the real one does, to zipper.dataspace…); the engine
    follows hop by hop and the auth flow decides per hop whether the token may go there."""
    page = fixture(S2_PAGE)
    product = page["value"][0]
    body = product_zip(product["Name"])
    page["value"] = [publish(product, body)]
    serve_identity(httpx_mock, Identity())
    httpx_mock.add_response(url=re.compile(re.escape(PRODUCTS) + r"\?.*"), json=page)
    httpx_mock.add_response(url=value_url(product), status_code=307, headers={"Location": target})

    def redirected(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == "Bearer a-1":
            return httpx.Response(200, content=body)
        return httpx.Response(401, text="Unauthorized")

    httpx_mock.add_callback(redirected, url=target, is_reusable=True)

    report = astroingest_run(source("SENTINEL-2", "2020-08-08", "2020-08-16", "max_products = 1"))

    [result] = report.assets
    assert bearers(httpx_mock, value_url(product)) == ["Bearer a-1"]
    if trusted:
        assert result.status == "stored", result.error
        assert bearers(httpx_mock, target) == ["Bearer a-1"]
        assert stored(tmp_path) == {f"SENTINEL-2/{zip_name(product)}": body}
    else:
        assert result.status == "failed"
        assert result.error is not None and result.error.startswith("HTTP 401")
        assert bearers(httpx_mock, target) == [None]


# -- the $skip cap -------------------------------------------------------------------------------


class Catalogue:
    """A CDSE-like catalogue over synthetic products, paging by the documented rules.

    ``$skip`` above 10 000 answers 422 with the documented body; ``@odata.nextLink`` is left
    out when the next skip would exceed 10 000; ``@odata.count`` comes only with
    ``$count=true`` (and never when ``counts`` is off). Products are shaped like the recorded
    ones, trimmed to the fields the plan reads.
    """

    CAP = 10_000

    def __init__(self, products: list[dict[str, Any]], *, counts: bool = True) -> None:
        self.products = products
        self.counts = counts
        self.windows: list[tuple[str, str, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        skip = int(params.get("$skip", "0"))
        top = int(params["$top"])
        if skip > self.CAP:
            detail = {
                "type": "less_than_equal",
                "loc": ["query", "$skip"],
                "msg": "Input should be less than or equal to 10000",
                "input": str(skip),
                "ctx": {"le": 10000},
            }
            return httpx.Response(422, json={"detail": [detail]})
        start = re.search(r"ContentDate/Start ge (\S+)", params["$filter"])
        end = re.search(r"ContentDate/Start lt (\S+)", params["$filter"])
        assert start is not None and end is not None
        self.windows.append((start.group(1), end.group(1), skip))
        low, high = parse(start.group(1)), parse(end.group(1))
        matching = [p for p in self.products if low <= parse(p["ContentDate"]["Start"]) < high]
        body: dict[str, Any] = {
            "@odata.context": "$metadata#Products",
            "value": matching[skip : skip + top],
        }
        if self.counts and params.get("$count") == "true":
            body["@odata.count"] = len(matching)
        if skip + top < len(matching) and skip + top <= self.CAP:
            body["@odata.nextLink"] = str(request.url.copy_merge_params({"$skip": skip + top}))
        return httpx.Response(200, json=body)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def synthetic_products(count: int, start: datetime, step: timedelta) -> list[dict[str, Any]]:
    """Three products per ContentDate/Start, so window edges fall between equal starts."""
    products = []
    for i in range(count):
        moment = (start + (i // 3) * step).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        products.append(
            {
                "@odata.mediaContentType": "application/octet-stream",
                "Id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"product-{i}")),
                "Name": f"S1A_IW_GRDH_1SDV_{i:05d}.SAFE",
                "ContentLength": 1000 + i,
                "Online": True,
                "Checksum": [],
                "ContentDate": {"Start": moment, "End": moment},
            }
        )
    return products


@pytest.mark.parametrize(
    ("counts", "total"),
    [(True, 10_500), (False, 11_500)],
    ids=["split-by-count", "resume-without-count"],
)
def test_more_than_the_skip_cap_is_harvested_by_time_windows_without_gaps_or_duplicates(
    httpx_mock: HTTPXMock, astroingest_host: Host, tmp_path: Path, counts: bool, total: int
) -> None:
    """Over 10 000 products in one day, more than $skip lets a listing reach (the
    listing reaches 11 000 at most: $skip 10 000 plus a page of 1000).

    With ``@odata.count`` the day is split at noon (where three products share a start) and
    each half is paged; without it the listing runs to the cap and resumes from the last
    start it saw. Either way every product is planned exactly once.
    """
    day = datetime(2024, 5, 1, tzinfo=UTC)
    products = synthetic_products(total, day, timedelta(seconds=20))
    catalogue = Catalogue(products, counts=counts)
    httpx_mock.add_callback(
        catalogue, url=re.compile(re.escape(PRODUCTS) + r"\?.*"), is_reusable=True
    )

    text = source("SENTINEL-1", "2024-05-01", "2024-05-02", "page_size = 1000")
    report = dry_run(astroingest_host, tmp_path, text)

    keys = [a.key for a in report.assets]
    assert len(keys) == len(set(keys)) == total
    assert set(keys) == {f"SENTINEL-1/{p['Name']}.zip" for p in products}
    skips = [skip for _, _, skip in catalogue.windows]
    assert max(skips) == (6_000 if counts else 10_000)  # never past the cap, never a 422
    starts = {(low, high) for low, high, _ in catalogue.windows}
    if counts:
        assert starts == {
            ("2024-05-01T00:00:00.000Z", "2024-05-02T00:00:00.000Z"),
            ("2024-05-01T00:00:00.000Z", "2024-05-01T12:00:00.000Z"),
            ("2024-05-01T12:00:00.000Z", "2024-05-02T00:00:00.000Z"),
        }
    else:
        # Product 10 999 (the last one the capped listing reached) starts at 3666 x 20 s.
        resumed = (day + 3666 * timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert starts == {
            ("2024-05-01T00:00:00.000Z", "2024-05-02T00:00:00.000Z"),
            (resumed, "2024-05-02T00:00:00.000Z"),
        }


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "concurrency = 8",
            "concurrency: at most 4: the Copernicus Data Space allows 4 concurrent downloads "
            "per account and refuses more (HTTP 429)",
        ),
        ("page_size = 5000", "page_size: Input should be less than or equal to 1000"),
        ("area = [10.0, 50.0, 5.0, 55.0]", "area: need -180 <= west < east <= 180"),
        ("area = [10, 50, 11]", "area: a bounding box is [west, south, east, north]"),
        (
            "area = \"POLYGON((1 2, 3 4, 1 2))') or true or ('\"",
            "area: a WKT POLYGON((lon lat, …)) or MULTIPOLYGON, or [W, S, E, N]",
        ),
        ('product_type = "S2MSI1C\' or 1 eq 1"', "product_type: String should match pattern"),
    ],
)
def test_invalid_settings_are_configuration_errors(
    astroingest_host: Host, tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(source("SENTINEL-2", "2020-08-08", "2020-08-16", line))
    with pytest.raises(ConfigError) as caught:
        load_config(path, astroingest_host)
    assert f"[sources.cdse] {message}" in str(caught.value)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (
            "2020-08-08T00:00:00",
            "2020-08-16",
            "start: give a time zone (e.g. 2024-05-01T00:00:00Z): the catalogue's times are UTC",
        ),
        ('"last tuesday"', "2020-08-16", "start: 'last tuesday' is not an ISO 8601 date"),
        ("2020-08-16", "2020-08-08", "end must be after start"),
    ],
)
def test_dates_are_strict(
    astroingest_host: Host, tmp_path: Path, start: str, end: str, message: str
) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(source("SENTINEL-2", start, end))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, astroingest_host)


def test_dates_may_be_toml_datetimes_dates_or_iso_strings(
    astroingest_host: Host, tmp_path: Path
) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(source("SENTINEL-2", "2020-08-08T02:00:00+02:00", '"2020-08-16"'))
    config = load_config(path, astroingest_host).sources["cdse"].config
    assert isinstance(config, cdse.CdseConfig)
    assert config.start == datetime(2020, 8, 8, tzinfo=UTC)
    assert config.end == datetime(2020, 8, 16, tzinfo=UTC)
    assert config.concurrency == 4
