"""``plugin = "tap"``: sync and async (UWS) queries through the real engine.

pytest-httpx serves recorded payloads at the services' real URLs (tests/fixtures/, provenance
in tests/fixtures/PROVENANCE.md and tests/fixtures/esa/PROVENANCE.md):

* esa/gaia_dr3_sync_top20_source_id.votable.xml: a Gaia DR3 sync VOTable, with its query;
* esa/gaia_dr3_launch_job.json: a Gaia FORMAT=json result, with its query;
* esa/gaia_uws_job_1542458555634O_completed.xml: a real COMPLETED UWS job document; the other
  phases are that document with ``<uws:phase>`` (and ``<uws:errorSummary>``) edited;
* esa/gaia_job_1744351221317O-result_plain.votable.xml: a real Gaia async-job result VOTable
  (another job than the document above: the document's own result was not recorded);
* eso/tap_obs_dbo_raw_sgra_DERIVED_pandas.csv: a real ESO tap_obs result, re-written by
  pandas (DERIVED), standing in for a CSV answer.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from astroingest import ConfigError
from astroingest._report import AssetResult, RunReport
from astroingest_plugins import tap

Run = Callable[..., RunReport]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GAIA_TAP = "https://gea.esac.esa.int/tap-server/tap"
ESO_TAP = "https://archive.eso.org/tap_obs"

VOTABLE = (FIXTURES / "esa/gaia_dr3_sync_top20_source_id.votable.xml").read_bytes()
VOTABLE_QUERY = (
    "SELECT TOP 20 * FROM gaiadr3.gaia_source where source_id = 4583627001381815936 "
    "or source_id = 5348723816842275584"
)
JSON_BODY = (FIXTURES / "esa/gaia_dr3_launch_job.json").read_bytes()
JSON_QUERY = "SELECT TOP 1 source_id, ra, dec, parallax from gaiadr3.gaia_source"
CSV_BODY = (FIXTURES / "eso/tap_obs_dbo_raw_sgra_DERIVED_pandas.csv").read_bytes()
CSV_QUERY = "select * from dbo.raw where target = 'SGR A' and object = 'SGR A'"
JOB_DOCUMENT = (FIXTURES / "esa/gaia_uws_job_1542458555634O_completed.xml").read_bytes()
JOB_ID = "1542458555634O"
JOB_QUERY = "select top 5 * from gaiadr2.gaia_source;"
RESULT = (FIXTURES / "esa/gaia_job_1744351221317O-result_plain.votable.xml").read_bytes()
RESULT_QUERY = "SELECT TOP 20 * FROM user_jferna01.my_votable_fits"
VOT_TYPE = "application/x-votable+xml"

FAST = """
[defaults]
retries = 2
backoff = 0.01
max_backoff = 0.02
read_timeout = 5
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_key(table: str, query: str, fmt: str, ext: str, maxrec: int | None = None) -> str:
    """The documented key: <table>-<first 12 hex of sha256(query \\n format [\\n MAXREC=n])>."""
    text = f"{query}\n{fmt}" + (f"\nMAXREC={maxrec}" if maxrec is not None else "")
    return f"{table}-{sha(text.encode())[:12]}{ext}"


def stored(tmp_path: Path, source: str) -> dict[str, bytes]:
    root = tmp_path / "astroingest-data" / "raw" / source
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def edit(body: bytes, old: bytes, new: bytes) -> bytes:
    """A real fixture with one exact edit (guards against the fixture changing under us)."""
    assert body.count(old) == 1, old
    return body.replace(old, new)


def sync_query_url(base: str, query: str, fmt: str, maxrec: int | None = None) -> httpx.URL:
    params = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, "FORMAT": fmt}
    if maxrec is not None:
        params["MAXREC"] = str(maxrec)
    return httpx.URL(f"{base}/sync", params=params)


def tap_source(
    query: str, fmt: str = "votable", name: str = "q", url: str = GAIA_TAP, **extra: object
) -> str:
    lines = [
        f"[sources.{name}]",
        'plugin = "tap"',
        f'url = "{url}"',
        f"query = {json.dumps(query)}",
    ]
    lines.append(f'format = "{fmt}"')
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def only_asset(report: RunReport) -> AssetResult:
    assert len(report.assets) == 1, [(a.status, a.error) for a in report.assets]
    return report.assets[0]


def job_document(phase: str, *, error: str | None = None, job_id: str = JOB_ID) -> bytes:
    """The real COMPLETED job document with its phase (and error summary) edited."""
    doc = edit(
        JOB_DOCUMENT,
        b"<uws:phase>COMPLETED</uws:phase>",
        f"<uws:phase>{phase}</uws:phase>".encode(),
    )
    if error is not None:
        summary = (
            f'<uws:errorSummary type="fatal"><uws:message>{error}</uws:message></uws:errorSummary>'
        )
        doc = edit(doc, b'<uws:errorSummary xsi:nil="true"/>', summary.encode())
    return doc.replace(JOB_ID.encode(), job_id.encode())


class FakeUws:
    """A UWS job service for pytest-httpx at ``<tap_base>/async``, playing a script of phases.

    The job is created in phase ``created``; ``POST <job>/phase PHASE=RUN`` moves a PENDING
    job to QUEUED; each ``GET <job>/phase`` takes the next phase from ``polls`` (the last one
    sticks). ``log`` records ``(method, path after the job URL)`` in order. With ``cookie``,
    job requests without that Cookie header get 403 (a logged-in user's job).
    """

    def __init__(
        self,
        httpx_mock: HTTPXMock,
        tap_base: str,
        result: bytes = RESULT,
        *,
        created: str = "PENDING",
        polls: Sequence[str] = ("EXECUTING", "COMPLETED"),
        error: str | None = None,
        result_headers: dict[str, str] | None = None,
        submit_status: int = 303,
        document: Callable[[str], bytes] | None = None,
        cookie: str | None = None,
        submit_first: Sequence[httpx.Response | Exception] = (),
        delete_status: int = 204,
    ) -> None:
        self.async_url = f"{tap_base}/async"
        self.job_url = f"{self.async_url}/{JOB_ID}"
        self.phase = created
        self.polls = list(polls)
        self.error = error
        self.result = result
        self.result_headers = {"Content-Type": VOT_TYPE, **(result_headers or {})}
        self.submit_status = submit_status
        self.document = document or (lambda phase: job_document(phase, error=self.error))
        self.cookie = cookie
        self.submit_first = list(submit_first)
        self.delete_status = delete_status
        self.jobs_created = 0
        self.log: list[tuple[str, str]] = []
        self.submitted: dict[str, str] = {}
        mock, job = httpx_mock, self.job_url
        mock.add_callback(
            self._submit, url=self.async_url, method="POST", is_reusable=bool(submit_first)
        )
        mock.add_callback(self._get_job, url=job, method="GET", is_reusable=True, is_optional=True)
        mock.add_callback(self._run, url=f"{job}/phase", method="POST", is_optional=True)
        mock.add_callback(
            self._poll, url=f"{job}/phase", method="GET", is_reusable=True, is_optional=True
        )
        mock.add_callback(
            self._get_result,
            url=f"{job}/results/result",
            method="GET",
            is_reusable=True,
            is_optional=True,
        )
        # Without its URL (the submission failed), a job cannot be deleted.
        mock.add_callback(self._delete, url=job, method="DELETE", is_optional=bool(submit_first))

    def _allowed(self, request: httpx.Request, what: str) -> bool:
        ok = self.cookie is None or request.headers.get("Cookie") == self.cookie
        self.log.append((request.method, what if ok else f"{what} (refused)"))
        return ok

    def _doc(self) -> httpx.Response:
        return httpx.Response(
            200, content=self.document(self.phase), headers={"Content-Type": "text/xml"}
        )

    def _submit(self, request: httpx.Request) -> httpx.Response:
        self._allowed(request, "submit")
        self.submitted = dict(httpx.QueryParams(request.content.decode()))
        if self.submit_first:
            first = self.submit_first.pop(0)
            if isinstance(first, httpx.Response):
                return first  # refused: no job created
            self.jobs_created += 1  # created, but the answer is lost on the way
            raise first
        self.jobs_created += 1
        if self.submit_status == 303:
            return httpx.Response(303, headers={"Location": self.job_url})
        return self._doc()

    def _get_job(self, request: httpx.Request) -> httpx.Response:
        return self._doc() if self._allowed(request, "") else httpx.Response(403)

    def _run(self, request: httpx.Request) -> httpx.Response:
        if not self._allowed(request, "/phase RUN"):
            return httpx.Response(403)
        assert httpx.QueryParams(request.content.decode())["PHASE"] == "RUN"
        self.phase = "QUEUED" if self.phase == "PENDING" else self.phase
        return httpx.Response(303, headers={"Location": self.job_url})

    def _poll(self, request: httpx.Request) -> httpx.Response:
        if not self._allowed(request, "/phase"):
            return httpx.Response(403)
        if self.polls:
            self.phase = self.polls.pop(0)
        return httpx.Response(200, text=self.phase, headers={"Content-Type": "text/plain"})

    def _get_result(self, request: httpx.Request) -> httpx.Response:
        if not self._allowed(request, "/results/result"):
            return httpx.Response(403)
        # A stream, not content=: httpx would decode a Content-Encoding body on construction,
        # and pytest-httpx hands the client that same, already decoded, response.
        headers = {"Content-Length": str(len(self.result)), **self.result_headers}
        return httpx.Response(200, stream=httpx.ByteStream(self.result), headers=headers)

    def _delete(self, request: httpx.Request) -> httpx.Response:
        if not self._allowed(request, "DELETE"):
            return httpx.Response(403)
        if self.delete_status == 303:  # UWS: back to the job list
            return httpx.Response(303, headers={"Location": self.async_url})
        return httpx.Response(self.delete_status)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses between polls, recorded instead of waited."""
    return record_sleeps(monkeypatch)


def record_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(tap, "_sleep", fake_sleep)
    return recorded


# -- choosing sync or async ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "query", "maxrec", "chosen"),
    [
        ("auto", "select top 2000 * from gaiadr3.gaia_source", None, "sync"),
        ("auto", "SELECT TOP 2001 * FROM gaiadr3.gaia_source", None, "async"),
        ("auto", "  Select Distinct Top 10 ra from t", None, "sync"),
        ("auto", "select * from pscomppars", None, "async"),
        ("auto", "select * from pscomppars", 500, "sync"),
        ("auto", "select top 5000 * from t", 100, "sync"),
        ("auto", "select top 10 * from t", 5000, "sync"),
        ("auto", "select * from (select top 5 * from t) as s", None, "async"),
        ("sync", "select * from pscomppars", None, "sync"),
        ("async", "select top 1 * from t", None, "async"),
    ],
)
def test_choose_mode_rule(mode: tap.Mode, query: str, maxrec: int | None, chosen: str) -> None:
    assert tap.choose_mode(mode, query, maxrec, 2000) == chosen


def test_uws_job_document_is_parsed_and_doctype_refused() -> None:
    job = tap.parse_job(JOB_DOCUMENT)
    assert job.job_id == JOB_ID and job.phase == "COMPLETED" and job.error is None
    assert job.result() == tap.UwsResult(
        id="result",
        href=f"http://gea.esac.esa.int/tap-server/tap/async/{JOB_ID}/results/result",
        mime=VOT_TYPE,
        encoding="gzip",
        size=4976,
        rows=5,
    )
    failed = tap.parse_job(job_document("ERROR", error="Unknown table"))
    assert (failed.phase, failed.error) == ("ERROR", "Unknown table")
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><job>&a;</job>'
    with pytest.raises(tap.FetchError, match="DOCTYPE"):
        tap.parse_job(bomb)


# -- sync ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "base", "query", "body", "media_type", "key", "validator"),
    [
        (
            "votable",
            GAIA_TAP,
            VOTABLE_QUERY,
            VOTABLE,
            VOT_TYPE,
            expected_key("gaiadr3.gaia_source", VOTABLE_QUERY, "votable", ".vot"),
            "votable",
        ),
        (
            "json",
            GAIA_TAP,
            JSON_QUERY,
            JSON_BODY,
            "application/json",
            expected_key("gaiadr3.gaia_source", JSON_QUERY, "json", ".json"),
            "json",
        ),
        (
            "csv",
            ESO_TAP,
            CSV_QUERY,
            CSV_BODY,
            "text/csv",
            expected_key("dbo.raw", CSV_QUERY, "csv", ".csv"),
            "csv",
        ),
    ],
)
def test_sync_result_lands_validated_under_a_stable_key(
    httpx_mock: HTTPXMock,
    astroingest_run: Run,
    tmp_path: Path,
    fmt: str,
    base: str,
    query: str,
    body: bytes,
    media_type: str,
    key: str,
    validator: str,
) -> None:
    url = sync_query_url(base, query, fmt)
    httpx_mock.add_response(url=url, content=body, headers={"Content-Type": media_type})

    # auto runs the TOP queries sync; the CSV query has no TOP, so sync is asked for.
    mode = "auto" if tap.expected_rows(query) else "sync"
    report = astroingest_run(FAST + tap_source(query, fmt, url=base, mode=mode))

    assert report.status == "ok", [a.error for a in report.assets]
    assert stored(tmp_path, "q") == {key: body}
    asset = only_asset(report)
    assert (asset.key, asset.status, asset.quality, asset.validator) == (
        key,
        "stored",
        1.0,
        validator,
    )
    assert asset.sha256 == sha(body)
    assert asset.url == str(url)
    assert asset.provenance == {
        "provider": "TAP",
        "endpoint": f"{base}/sync",
        "mode": "sync",
        "table": key.rsplit("-", 1)[0],
        "query": query,
        "format": fmt,
    }


def test_rerun_keeps_the_key_and_reports_unchanged(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    url = sync_query_url(GAIA_TAP, VOTABLE_QUERY, "votable")
    httpx_mock.add_response(
        url=url, content=VOTABLE, headers={"Content-Type": VOT_TYPE}, is_reusable=True
    )
    text = FAST + tap_source(VOTABLE_QUERY)

    first, second = astroingest_run(text), astroingest_run(text)

    assert only_asset(first).key == only_asset(second).key
    assert (only_asset(first).status, only_asset(second).status) == ("stored", "unchanged")
    assert len(stored(tmp_path, "q")) == 1
    assert len(httpx_mock.get_requests()) == 2


def test_429_with_retry_after_on_the_sync_get_is_waited_out_and_retried(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    url = sync_query_url(GAIA_TAP, VOTABLE_QUERY, "votable")
    httpx_mock.add_response(
        url=url, status_code=429, headers={"Retry-After": "1"}, text="slow down"
    )
    httpx_mock.add_response(url=url, content=VOTABLE, headers={"Content-Type": VOT_TYPE})

    started = time.monotonic()
    report = astroingest_run(FAST + tap_source(VOTABLE_QUERY))

    assert time.monotonic() - started >= 1.0  # Retry-After: 1 honoured, above max_backoff
    asset = only_asset(report)
    assert (asset.status, asset.attempts) == ("stored", 2)
    assert list(stored(tmp_path, "q").values()) == [VOTABLE]


def test_query_status_error_votable_is_quarantined_with_its_message(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """The real sync VOTable with its QUERY_STATUS INFO turned to ERROR (message added)."""
    body = error_votable("Cannot parse query: Unknown column &quot;sourceid&quot;")
    url = sync_query_url(GAIA_TAP, VOTABLE_QUERY, "votable")
    httpx_mock.add_response(url=url, content=body, headers={"Content-Type": VOT_TYPE})

    report = astroingest_run(FAST + tap_source(VOTABLE_QUERY))

    asset = only_asset(report)
    assert (asset.status, asset.quality) == ("quarantined", 0.0)
    assert asset.error is not None
    assert 'query_status (Cannot parse query: Unknown column "sourceid")' in asset.error
    assert stored(tmp_path, "q") == {}
    quarantined = tmp_path / "astroingest-data" / "logs" / "quarantine" / "q" / asset.key
    assert quarantined.read_bytes() == body


OVERFLOWED = edit(
    RESULT, b"</TABLE>\n", b'</TABLE>\n<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n'
)
"""The real 2-row result VOTable of a TOP 20 query on a user table, with the OVERFLOW INFO
a service appends after the table when MAXREC=2 cut the result."""


def test_overflow_is_quarantined_under_the_default_min_quality(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    url = sync_query_url(GAIA_TAP, RESULT_QUERY, "votable", maxrec=2)
    httpx_mock.add_response(url=url, content=OVERFLOWED, headers={"Content-Type": VOT_TYPE})

    report = astroingest_run(FAST + tap_source(RESULT_QUERY, maxrec=2))

    asset = only_asset(report)
    assert asset.status == "quarantined"
    assert asset.quality == 7 / 8  # only the non-critical not_truncated check failed
    assert "not_truncated (OVERFLOW: result truncated at the row limit)" in (asset.error or "")
    assert asset.key == expected_key(
        "user_jferna01.my_votable_fits", RESULT_QUERY, "votable", ".vot", 2
    )
    assert stored(tmp_path, "q") == {}


def test_overflow_is_stored_when_the_source_accepts_truncated_samples(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    url = sync_query_url(GAIA_TAP, RESULT_QUERY, "votable", maxrec=2)
    httpx_mock.add_response(url=url, content=OVERFLOWED, headers={"Content-Type": VOT_TYPE})

    report = astroingest_run(FAST + tap_source(RESULT_QUERY, maxrec=2, min_quality=0.85))

    asset = only_asset(report)
    assert (asset.status, asset.quality) == ("stored", 7 / 8)
    assert asset.provenance is not None and asset.provenance["maxrec"] == 2
    assert list(stored(tmp_path, "q").values()) == [OVERFLOWED]


def test_error_votable_instead_of_csv_fails_with_its_message(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """TAP answers errors as VOTables whatever FORMAT said: the real Gaia VOTable, made an error."""
    body = error_votable("Table dbo.rawx does not exist")
    url = sync_query_url(ESO_TAP, CSV_QUERY, "csv")
    httpx_mock.add_response(url=url, content=body, headers={"Content-Type": "text/xml"})

    report = astroingest_run(FAST + tap_source(CSV_QUERY, "csv", url=ESO_TAP, mode="sync"))

    asset = only_asset(report)
    assert asset.status == "failed"
    assert asset.error == (
        "TAP: the service answered with an XML error document instead of csv: "
        "Table dbo.rawx does not exist"
    )
    assert stored(tmp_path, "q") == {}


def error_votable(message: str) -> bytes:
    """The real sync VOTable with its QUERY_STATUS INFO turned to ERROR, carrying ``message``."""
    return edit(
        VOTABLE,
        b'<INFO name="QUERY_STATUS" value="OK"/>',
        f'<INFO name="QUERY_STATUS" value="ERROR">{message}</INFO>'.encode(),
    )


def test_http_400_error_document_is_reported_with_its_message(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    url = sync_query_url(GAIA_TAP, VOTABLE_QUERY, "votable")
    body = error_votable("Incorrect ADQL query: Encountered &quot;wher&quot; at line 1")
    httpx_mock.add_response(
        url=url, status_code=400, content=body, headers={"Content-Type": VOT_TYPE}
    )

    report = astroingest_run(FAST + tap_source(VOTABLE_QUERY))

    asset = only_asset(report)
    assert (asset.status, asset.attempts) == ("failed", 1)  # a 400 is not retried
    assert asset.error == (
        f"HTTP 400 Bad Request for {url}: "
        'TAP says: Incorrect ADQL query: Encountered "wher" at line 1'
    )
    assert stored(tmp_path, "q") == {}


def test_refused_job_submission_is_reported_with_the_error_document(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    body = error_votable("Table gaiadr2.gaia_sourc does not exist")
    httpx_mock.add_response(url=f"{GAIA_TAP}/async", method="POST", status_code=400, content=body)

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    assert only_asset(report).error == (
        f"planning failed: TAP: job submission refused (HTTP 400) at {GAIA_TAP}/async: "
        "Table gaiadr2.gaia_sourc does not exist"
    )


# -- async -----------------------------------------------------------------------------------


def test_async_job_goes_through_every_phase_then_is_deleted(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, sleeps: list[float]
) -> None:
    uws = FakeUws(
        httpx_mock,
        GAIA_TAP,
        created="PENDING",
        polls=["QUEUED", "EXECUTING", "EXECUTING", "COMPLETED"],
    )
    text = FAST + tap_source(JOB_QUERY, mode="async", poll_interval=0.5, poll_max=2)

    report = astroingest_run(text)

    assert report.status == "ok", [a.error for a in report.assets]
    assert uws.submitted == {
        "REQUEST": "doQuery",
        "LANG": "ADQL",
        "FORMAT": "votable",
        "QUERY": JOB_QUERY,
        "PHASE": "RUN",
    }
    assert uws.log == [
        ("POST", "submit"),
        ("GET", ""),  # the job the 303 named (not followed, read after): PENDING, so...
        ("POST", "/phase RUN"),  # ...it is started explicitly
        ("GET", ""),  # QUEUED
        ("GET", "/phase"),  # QUEUED
        ("GET", "/phase"),  # EXECUTING
        ("GET", "/phase"),  # EXECUTING
        ("GET", "/phase"),  # COMPLETED
        ("GET", ""),  # the completed job's results list
        ("GET", "/results/result"),
        ("DELETE", "DELETE"),
    ]
    assert sleeps == [0.5, 1.0, 2.0, 2.0]  # doubling, capped at poll_max
    key = expected_key("gaiadr2.gaia_source", JOB_QUERY, "votable", ".vot")
    assert stored(tmp_path, "q") == {key: RESULT}
    asset = only_asset(report)
    assert asset.url == f"{uws.job_url}/results/result"
    assert asset.provenance == {
        "provider": "TAP",
        "endpoint": uws.async_url,
        "mode": "async",
        "table": "gaiadr2.gaia_source",
        "query": JOB_QUERY,
        "format": "votable",
        "job_id": JOB_ID,
        "rows": 5,
    }


def test_a_job_submission_is_sent_once_even_when_its_answer_is_lost(
    httpx_mock: HTTPXMock, astroingest_run: Run, sleeps: list[float]
) -> None:
    """The POST created a job, then timed out: sending it again would leave a second job."""
    uws = FakeUws(httpx_mock, GAIA_TAP, submit_first=[httpx.ReadTimeout("lost")])

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    assert report.status == "failed"
    assert only_asset(report).error is not None
    assert uws.log == [("POST", "submit")]
    assert uws.jobs_created == 1


@pytest.mark.parametrize("status", [429, 503])
def test_a_submission_refused_with_429_or_503_is_sent_again(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, sleeps: list[float], status: int
) -> None:
    """No job exists after a 429/503: the submission is retried with the run's backoff."""
    busy = httpx.Response(status, headers={"Retry-After": "0"})
    uws = FakeUws(httpx_mock, GAIA_TAP, created="COMPLETED", submit_first=[busy])

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    assert only_asset(report).status == "stored", only_asset(report).error
    assert uws.log == [
        ("POST", "submit"),
        ("POST", "submit"),
        ("GET", ""),
        ("GET", "/results/result"),
        ("DELETE", "DELETE"),
    ]
    assert uws.jobs_created == 1


def test_a_submission_failing_with_500_is_not_sent_again(
    httpx_mock: HTTPXMock, astroingest_run: Run, sleeps: list[float]
) -> None:
    """A 500 may come after the job was created: one POST, and the source fails."""
    uws = FakeUws(httpx_mock, GAIA_TAP, submit_first=[httpx.Response(500)])

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    assert report.status == "failed"
    assert "job submission at" in (only_asset(report).error or "")
    assert uws.log == [("POST", "submit")]


def test_the_delete_redirect_to_the_job_list_is_not_followed(
    httpx_mock: HTTPXMock, astroingest_run: Run, sleeps: list[float]
) -> None:
    """UWS answers DELETE with a 303 to /async, the user's whole job list: not fetched."""
    uws = FakeUws(httpx_mock, GAIA_TAP, created="COMPLETED", delete_status=303)

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    assert only_asset(report).status == "stored"
    assert uws.log[-1] == ("DELETE", "DELETE")
    assert [(r.method, str(r.url)) for r in httpx_mock.get_requests()][-1] == (
        "DELETE",
        uws.job_url,
    )
    assert not [
        r for r in httpx_mock.get_requests() if str(r.url) == uws.async_url and r.method == "GET"
    ]


def test_async_and_sync_give_the_same_key(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, sleeps: list[float]
) -> None:
    FakeUws(httpx_mock, GAIA_TAP, VOTABLE, created="EXECUTING", polls=["COMPLETED"])
    url = sync_query_url(GAIA_TAP, VOTABLE_QUERY, "votable")
    httpx_mock.add_response(url=url, content=VOTABLE, headers={"Content-Type": VOT_TYPE})

    report = astroingest_run(
        FAST
        + tap_source(VOTABLE_QUERY, name="a", mode="async")
        + tap_source(VOTABLE_QUERY, name="s")
    )

    assert report.status == "ok", [a.error for a in report.assets]
    assert stored(tmp_path, "a") == stored(tmp_path, "s") != {}


def test_job_answered_with_200_and_its_document_needs_no_redirect(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, sleeps: list[float]
) -> None:
    uws = FakeUws(httpx_mock, GAIA_TAP, created="COMPLETED", submit_status=200)

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    assert only_asset(report).status == "stored"
    assert uws.log == [("POST", "submit"), ("GET", "/results/result"), ("DELETE", "DELETE")]
    assert sleeps == []


def test_async_error_phase_fails_the_source_with_the_error_summary(
    httpx_mock: HTTPXMock, astroingest_run: Run, sleeps: list[float]
) -> None:
    message = "Error while executing query: relation gaiadr2.gaia_sourc does not exist"
    uws = FakeUws(
        httpx_mock, GAIA_TAP, created="QUEUED", polls=["EXECUTING", "ERROR"], error=message
    )

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    assert report.status == "failed"
    failure = only_asset(report)
    assert (failure.status, failure.key) == ("failed", None)
    assert failure.error == f"planning failed: TAP: job {JOB_ID} failed (phase ERROR): {message}"
    assert ("GET", "/results/result") not in uws.log
    assert uws.log[-1] == ("DELETE", "DELETE")  # the failed job is cleaned up too


def test_job_that_outlives_job_timeout_is_given_up_and_deleted(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    uws = FakeUws(httpx_mock, GAIA_TAP, created="EXECUTING", polls=["EXECUTING"])
    text = FAST + tap_source(
        JOB_QUERY, mode="async", poll_interval=0.01, poll_max=0.02, job_timeout=0.1
    )

    report = astroingest_run(text)

    error = only_asset(report).error or ""
    assert f"TAP: job {JOB_ID} still EXECUTING after 0.1 s (job_timeout)" in error
    assert uws.log.count(("GET", "/phase")) >= 3
    assert uws.log[-1] == ("DELETE", "DELETE")


@pytest.mark.parametrize("published", ["right", "wrong"])
def test_published_result_size_is_verified(
    httpx_mock: HTTPXMock, astroingest_run: Run, sleeps: list[float], published: str
) -> None:
    """The real job document without encoding="gzip", its size set to the result's (or not)."""
    size = len(RESULT) if published == "right" else len(RESULT) + 7

    def document(phase: str) -> bytes:
        doc = edit(job_document(phase), b'encoding="gzip" size="4976"', f'size="{size}"'.encode())
        return doc

    FakeUws(httpx_mock, GAIA_TAP, created="COMPLETED", document=document)

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    asset = only_asset(report)
    if published == "right":
        assert asset.status == "stored"
    else:
        assert asset.status == "failed"
        assert f"size mismatch: got {len(RESULT)} bytes, expected {size}" in (asset.error or "")


def test_truncated_gzip_result_fails(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, sleeps: list[float]
) -> None:
    cut = gzip.compress(RESULT)[:-12]
    FakeUws(httpx_mock, GAIA_TAP, cut, created="COMPLETED")

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    asset = only_asset(report)
    assert asset.status == "failed"
    assert "gzip-encoded TAP result ends early (truncated)" in (asset.error or "")
    assert stored(tmp_path, "q") == {}


# -- dry run and configuration -----------------------------------------------------------------


def test_dry_run_shows_the_sync_asset_and_submits_no_job(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    text = (
        FAST
        + tap_source(VOTABLE_QUERY, name="small")
        + tap_source(JOB_QUERY, name="big", mode="async")
    )

    report = astroingest_run(text, dry_run=True)

    assert report.status == "dry-run"
    [planned] = report.assets
    assert (planned.source, planned.status) == ("small", "planned")
    assert planned.url == str(sync_query_url(GAIA_TAP, VOTABLE_QUERY, "votable"))
    assert planned.key == expected_key("gaiadr3.gaia_source", VOTABLE_QUERY, "votable", ".vot")
    assert httpx_mock.get_requests() == []  # nothing fetched, no job submitted
    assert not (tmp_path / "astroingest-data" / "raw").exists()


def test_a_service_without_a_phase_resource_is_polled_through_its_job_document(
    httpx_mock: HTTPXMock, astroingest_run: Run, sleeps: list[float]
) -> None:
    uws = FakeUws(httpx_mock, GAIA_TAP, created="EXECUTING")
    httpx_mock.reset()  # the same service, but GET <job>/phase is 404
    phases = iter(["EXECUTING", "EXECUTING", "COMPLETED"])

    def job(request: httpx.Request) -> httpx.Response:
        uws.phase = next(phases, "COMPLETED")
        return uws._get_job(request)

    httpx_mock.add_callback(uws._submit, url=uws.async_url, method="POST")
    httpx_mock.add_callback(job, url=uws.job_url, method="GET", is_reusable=True)
    httpx_mock.add_response(url=f"{uws.job_url}/phase", status_code=404, is_reusable=True)
    httpx_mock.add_callback(uws._get_result, url=f"{uws.job_url}/results/result")
    httpx_mock.add_callback(uws._delete, url=uws.job_url, method="DELETE")

    report = astroingest_run(FAST + tap_source(JOB_QUERY, mode="async"))

    assert only_asset(report).status == "stored"
    assert uws.log.count(("GET", "")) == 4  # after the 303, 2 polls, the results list
    assert len(sleeps) == 2


def test_base_url_may_stand_for_url(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    url = sync_query_url(GAIA_TAP, VOTABLE_QUERY, "votable")
    httpx_mock.add_response(url=url, content=VOTABLE, headers={"Content-Type": VOT_TYPE})
    text = tap_source(VOTABLE_QUERY).replace(f'url = "{GAIA_TAP}"', f'base_url = "{GAIA_TAP}"')

    report = astroingest_run(FAST + text)

    assert only_asset(report).status == "stored"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('format = "fits"', "format"),
        ('mode = "later"', "mode"),
        ("maxrec = -1", "maxrec"),
        ('query = " "', "query"),
        ('url = "ftp://x"', "url"),
    ],
)
def test_bad_settings_are_config_errors(astroingest_run: Run, extra: str, field: str) -> None:
    text = "\n".join(
        line
        for line in tap_source(VOTABLE_QUERY).splitlines()
        if not line.startswith(extra.split(" ")[0] + " ")
    )
    text += "\n" + extra + "\n"
    with pytest.raises(ConfigError, match=re.escape(field)):
        astroingest_run(text)


def test_url_is_required(astroingest_run: Run) -> None:
    text = tap_source(VOTABLE_QUERY).replace(f'url = "{GAIA_TAP}"\n', "")
    with pytest.raises(ConfigError, match="give url"):
        astroingest_run(text)
