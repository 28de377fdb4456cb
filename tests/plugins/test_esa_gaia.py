"""``plugin = "esa.gaia"``: the Gaia archive's TAP+, through the real engine.

Recorded payloads (tests/fixtures/esa/, provenance in PROVENANCE.md) served by pytest-httpx
at the archive's real URLs: the DR3 sync VOTable with its query, the real UWS job document
(other phases are that document with the phase edited, see tests/plugins/test_tap.py) and a
real async-job result VOTable. The login answer (a 200 with ``Set-Cookie: JSESSIONID``) is
built here: no recorded one exists, and a real one would hold a live session.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from astroingest import ConfigError
from astroingest._report import RunReport
from tests.plugins.test_tap import (
    RESULT,
    VOT_TYPE,
    VOTABLE,
    VOTABLE_QUERY,
    FakeUws,
    expected_key,
    only_asset,
    record_sleeps,
    stored,
)

Run = Callable[..., RunReport]

GAIA = "https://gea.esac.esa.int/tap-server"
TAP = f"{GAIA}/tap"
CITATION = (
    "How to cite and acknowledge Gaia: https://gea.esac.esa.int/archive/documentation/credits.html"
)
FAST = "[defaults]\nretries = 1\nbackoff = 0.01\nmax_backoff = 0.02\n"
NO_TOP = "select source_id, ra, dec from gaiadr3.gaia_source where parallax > 100"
USER_QUERY = "SELECT * FROM user_jdoe.my_table"
SESSION = "JSESSIONID=5A1B2C3D4E5F60718293A4B5C6D7E8F9"
PASSWORD = "s3cret-Gaia-pw"


def sync_url(query: str, fmt: str = "votable") -> httpx.URL:
    params = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, "FORMAT": fmt}
    return httpx.URL(f"{TAP}/sync", params=params)


def source(query: str, name: str = "gaia", **extra: object) -> str:
    lines = [f"[sources.{name}]", 'plugin = "esa.gaia"', f"query = {json.dumps(query)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def logged_in() -> dict[str, object]:
    return {"username": "jdoe", "password": "${GAIA_PASSWORD}"}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses between polls, recorded instead of waited."""
    return record_sleeps(monkeypatch)


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GAIA_PASSWORD", PASSWORD)
    return PASSWORD


def add_login(httpx_mock: HTTPXMock, status: int = 200) -> list[dict[str, str]]:
    """``POST /tap-server/login``: a session cookie for jdoe with the right password."""
    forms: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        forms.append(form)
        if status != 200 or form != {"username": "jdoe", "password": PASSWORD}:
            return httpx.Response(status if status != 200 else 401, text="Login failed")
        cookie = f"{SESSION}; Path=/tap-server; Secure; HttpOnly"
        return httpx.Response(200, text="OK", headers={"Set-Cookie": cookie})

    httpx_mock.add_callback(answer, url=f"{GAIA}/login", method="POST")
    return forms


def test_top_20_query_runs_sync_at_the_archive(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    url = sync_url(VOTABLE_QUERY)
    httpx_mock.add_response(url=url, content=VOTABLE, headers={"Content-Type": VOT_TYPE})

    report = astroingest_run(FAST + source(VOTABLE_QUERY))

    asset = only_asset(report)
    assert (asset.status, asset.url, asset.quality) == ("stored", str(url), 1.0)
    key = expected_key("gaiadr3.gaia_source", VOTABLE_QUERY, "votable", ".vot")
    assert stored(tmp_path, "gaia") == {key: VOTABLE}
    assert asset.provenance == {
        "provider": "ESA Gaia archive",
        "endpoint": f"{TAP}/sync",
        "mode": "sync",
        "table": "gaiadr3.gaia_source",
        "query": VOTABLE_QUERY,
        "format": "votable",
        "citation": CITATION,
        "authenticated": False,
    }


@pytest.mark.parametrize("delivery", ["gzip file", "Content-Encoding: gzip", "plain"])
def test_query_without_top_runs_async_and_lands_the_decoded_table(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, sleeps: list[float], delivery: str
) -> None:
    """The job document says encoding="gzip": whatever way the bytes come, the table lands."""
    body = RESULT if delivery == "plain" else gzip.compress(RESULT)
    headers = {"Content-Encoding": "gzip"} if delivery.startswith("Content-Encoding") else {}
    uws = FakeUws(
        httpx_mock, TAP, body, created="QUEUED", polls=["COMPLETED"], result_headers=headers
    )

    report = astroingest_run(FAST + source(NO_TOP))

    asset = only_asset(report)
    assert asset.status == "stored", asset.error
    assert (asset.sha256, asset.size) == (hashlib.sha256(RESULT).hexdigest(), len(RESULT))
    assert stored(tmp_path, "gaia") == {
        expected_key("gaiadr3.gaia_source", NO_TOP, "votable", ".vot"): RESULT
    }
    assert uws.submitted["QUERY"] == NO_TOP and uws.submitted["PHASE"] == "RUN"
    assert uws.log[-1] == ("DELETE", "DELETE")
    assert asset.provenance is not None
    assert (asset.provenance["mode"], asset.provenance["job_id"]) == ("async", "1542458555634O")


def test_sync_limit_is_2000_rows(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    top_2000 = "select top 2000 source_id from gaiadr3.gaia_source"
    top_2001 = "select top 2001 source_id from gaiadr3.gaia_source"
    text = FAST + source(top_2000, name="small") + source(top_2001, name="big")

    report = astroingest_run(text, dry_run=True)

    [planned] = report.assets
    assert (planned.source, planned.url) == ("small", str(sync_url(top_2000)))
    assert httpx_mock.get_requests() == []  # no job submitted for the big one, nothing fetched


def test_dry_run_neither_logs_in_nor_submits(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, password: str
) -> None:
    small = "select top 10 * from user_jdoe.my_table"
    text = FAST + source(small, name="small", **logged_in()) + source(USER_QUERY, **logged_in())

    report = astroingest_run(text, dry_run=True)

    [planned] = report.assets
    assert (planned.source, planned.url) == ("small", str(sync_url(small)))
    assert planned.provenance is not None and planned.provenance["authenticated"] is False
    assert httpx_mock.get_requests() == []


def test_login_cookie_goes_with_every_request_then_the_session_is_closed(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, sleeps: list[float], password: str
) -> None:
    forms = add_login(httpx_mock)
    uws = FakeUws(httpx_mock, TAP, created="EXECUTING", polls=["COMPLETED"], cookie=SESSION)
    httpx_mock.add_response(url=f"{GAIA}/logout", method="POST", text="OK")

    report = astroingest_run(FAST + source(USER_QUERY, **logged_in()))

    asset = only_asset(report)
    assert asset.status == "stored", asset.error
    assert forms == [{"username": "jdoe", "password": PASSWORD}]
    assert uws.log == [
        ("POST", "submit"),
        ("GET", ""),  # the 303 followed, with the session
        ("GET", "/phase"),
        ("GET", ""),
        ("GET", "/results/result"),
        ("DELETE", "DELETE"),
    ]
    requests = httpx_mock.get_requests()
    assert [r.url.path for r in requests][-2:] == [
        "/tap-server/tap/async/1542458555634O",
        "/tap-server/logout",
    ]
    assert requests[-2].method == "DELETE"  # the job goes while the session still exists
    assert requests[-1].headers["Cookie"] == SESSION
    assert asset.provenance is not None and asset.provenance["authenticated"] is True
    assert password not in report.to_json()
    assert stored(tmp_path, "gaia") == {
        expected_key("user_jdoe.my_table", USER_QUERY, "votable", ".vot"): RESULT
    }


def test_session_cookie_is_not_sent_by_other_sources(
    httpx_mock: HTTPXMock, astroingest_run: Run, password: str
) -> None:
    add_login(httpx_mock)
    mine = sync_url("select top 10 * from user_jdoe.my_table")
    httpx_mock.add_response(url=mine, content=RESULT, headers={"Content-Type": VOT_TYPE})
    httpx_mock.add_response(url=f"{GAIA}/logout", method="POST", text="OK")
    uws = FakeUws(httpx_mock, TAP, created="EXECUTING", polls=["EXECUTING", "COMPLETED"])
    text = (
        FAST
        + source("select top 10 * from user_jdoe.my_table", name="mine", **logged_in())
        + source(NO_TOP, name="anon", poll_interval=0.05, poll_max=0.05)
    )

    report = astroingest_run(text)

    assert report.status == "ok", [a.error for a in report.assets]
    requests = httpx_mock.get_requests()
    login = next(i for i, r in enumerate(requests) if r.url.path.endswith("/login"))
    anon = [
        (i, r) for i, r in enumerate(requests) if r.url.path.startswith("/tap-server/tap/async/")
    ]
    assert any(i > login for i, _ in anon)  # the anonymous job was polled after the login
    assert all("JSESSIONID" not in r.headers.get("Cookie", "") for _, r in anon)
    [sync] = [r for r in requests if r.url.path == "/tap-server/tap/sync"]
    assert sync.headers["Cookie"] == SESSION
    assert len(uws.log) >= 4


@pytest.mark.parametrize("status", [401, 403])
def test_refused_login_fails_the_source_clearly_without_the_password(
    httpx_mock: HTTPXMock,
    astroingest_run: Run,
    password: str,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_login(httpx_mock, status)

    report = astroingest_run(FAST + source(USER_QUERY, **logged_in()))

    failure = only_asset(report)
    assert failure.status == "failed"
    assert failure.error == (
        f"planning failed: ESA Gaia archive: login as 'jdoe' refused (HTTP {status}) "
        f"at {GAIA}/login: check username and password"
    )
    assert [r.url.path for r in httpx_mock.get_requests()] == ["/tap-server/login"]
    assert password not in report.to_json()
    assert password not in caplog.text


def test_username_without_password_is_a_config_error(astroingest_run: Run) -> None:
    with pytest.raises(ConfigError, match="both username and password"):
        astroingest_run(source(VOTABLE_QUERY, username="jdoe"))


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://cdn.example.org/results/user_table.vot",
        "http://gea.esac.esa.int/tap-server/tap/sync/result.vot",  # same host, down to http
        "https://gea.esac.esa.int:8443/tap-server/tap/sync/result.vot",  # another port
    ],
    ids=["other-host", "downgrade-to-http", "other-port"],
)
def test_the_session_cookie_does_not_follow_a_redirect_off_the_archive_s_origin(
    httpx_mock: HTTPXMock, astroingest_run: Run, password: str, elsewhere: str
) -> None:
    """The login answer as above; the sync query answers a 302 (built here: the archive
    is not known to redirect results) to another origin, which must not see the session."""
    add_login(httpx_mock)
    query = "select top 10 * from user_jdoe.my_table"
    httpx_mock.add_response(url=sync_url(query), status_code=302, headers={"Location": elsewhere})
    httpx_mock.add_response(url=elsewhere, content=RESULT, headers={"Content-Type": VOT_TYPE})
    httpx_mock.add_response(url=f"{GAIA}/logout", method="POST", text="OK")

    report = astroingest_run(FAST + source(query, **logged_in()))

    assert only_asset(report).status == "stored", only_asset(report).error
    [first] = httpx_mock.get_requests(url=sync_url(query))
    assert first.headers["Cookie"] == SESSION  # the archive itself still gets it
    [redirected] = httpx_mock.get_requests(url=elsewhere)
    assert "JSESSIONID" not in redirected.headers.get("Cookie", "")
