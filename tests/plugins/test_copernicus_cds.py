"""``plugin = "copernicus.cds"``: Climate Data Store jobs through the real engine.

No recorded CDS payload exists in ``/work/shared/fixtures`` (SOURCES.md: "no real CDS
error (problem+json) body in a traceable file", and no job or results document either).
Every CDS payload here is therefore SYNTHETIC, built by the helpers below strictly from
the shapes documented in ``/work/shared/providers/apis.md`` section 5b: the 201 submit
reply, the job status document, ``asset.value`` of the results, and RFC 7807 problems.
Each test's docstring says which of them it uses. The remote archive (the CDS API and the
object store) is mocked with pytest-httpx at the real URLs; everything else is the real
engine run by ``astroingest_run``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from astroingest import ConfigError
from astroingest._config import load_config
from astroingest._engine import Engine, RunOptions
from astroingest._plugins import Host
from astroingest._progress import LogProgress
from astroingest._redact import Redactor
from astroingest._report import AssetResult, RunReport
from astroingest_plugins.copernicus.cds import CdsConfig, result_extension

Run = Callable[..., RunReport]

API = "https://cds.climate.copernicus.eu/api"
DATASET = "reanalysis-era5-single-levels"
SUBMIT = f"{API}/retrieve/v1/processes/{DATASET}/execution"
OBJECT_STORE = "https://object-store.os-api.cci2.ecmwf.int/cci2-prod-cache"
TOKEN = "3f2b8c1e-5d4a-4e9b-9c7d-0a1b2c3d4e5f"  # UUID-shaped, like a real personal token
TOKEN_HEADER = "PRIVATE-TOKEN"
CREATED = "2025-03-04T10:00:00.000000"
FINISHED = "2025-03-04T10:00:09.000000"
REQUEST: dict[str, Any] = {
    "product_type": ["reanalysis"],
    "variable": ["2m_temperature"],
    "year": ["2024"],
    "month": ["01"],
    "day": ["01"],
    "time": ["12:00"],
    "data_format": "netcdf",
    "download_format": "unarchived",
}
FAST = """
[defaults]
retries = 2
backoff = 0.01
max_backoff = 0.02
read_timeout = 5
"""


# -- synthetic payloads, shaped as apis.md section 5b documents them -------------------------


def netcdf4_body(size: int = 2048) -> bytes:
    """Not a real NetCDF-4 file: an HDF5 version-0 superblock padded with zeros.

    Signature, versions 0, 8-byte offsets and lengths, then base address 0, no free-space
    address, the end-of-file address (= ``size``) and no driver block: what the
    netcdf_hdf5 validator reads (the signature, and that the file is as long as the
    superblock says).
    """
    head = b"\x89HDF\r\n\x1a\n" + bytes([0, 0, 0, 0, 0, 8, 8, 0])
    head += (4).to_bytes(2, "little") + (16).to_bytes(2, "little") + bytes(4)
    addresses = bytes(8) + b"\xff" * 8 + size.to_bytes(8, "little") + b"\xff" * 8
    return (head + addresses).ljust(size, b"\0")


def job_url(job: str, api: str = API) -> str:
    return f"{api}/retrieve/v1/jobs/{job}"


def submitted(job: str, api: str = API, status: str = "accepted") -> dict[str, Any]:
    """The 201 reply to POST .../execution (apis.md 5b)."""
    return {
        "processID": DATASET,
        "type": "process",
        "jobID": job,
        "status": status,
        "created": CREATED,
        "updated": CREATED,
        "links": [
            {"rel": "self", "href": f"{api}/retrieve/v1/processes/{DATASET}/execution"},
            {"rel": "monitor", "href": job_url(job, api)},
        ],
        "metadata": {"datasetMetadata": {"messages": []}},
    }


def job_status(job: str, status: str, api: str = API) -> dict[str, Any]:
    """GET .../jobs/<id>: a successful job adds started/finished and a rel=results link."""
    doc: dict[str, Any] = {
        "processID": DATASET,
        "type": "process",
        "jobID": job,
        "status": status,
        "created": CREATED,
        "updated": FINISHED,
        "links": [{"rel": "self", "href": job_url(job, api)}],
    }
    if status == "successful":
        doc.update(started=CREATED, finished=FINISHED)
        doc["links"].append({"rel": "results", "href": f"{job_url(job, api)}/results"})
    return doc


def results(
    href: str,
    body: bytes,
    *,
    size: int | None = None,
    checksum: str | None = None,
    media_type: str = "application/netcdf",
) -> dict[str, Any]:
    """GET .../jobs/<id>/results: ``asset.value`` with href, type, file:size, file:checksum."""
    name = href.rsplit("/", 1)[-1]
    return {
        "asset": {
            "value": {
                "type": media_type,
                "href": href,
                "file:checksum": checksum or hashlib.md5(body).hexdigest(),
                "file:size": len(body) if size is None else size,
                "file:local_path": f"s3://cci2-prod-cache/{name}",
            }
        }
    }


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    """An RFC 7807 problem, the CDS error format (apis.md 5b)."""
    doc = {"type": "about:blank", "title": title, "status": status, "instance": SUBMIT}
    if detail is not None:
        doc["detail"] = detail
    return {**doc, "trace_id": "5b1d0c3a-0000-4000-8000-000000000000", **extra}


def inline(table: Mapping[str, Any]) -> str:
    """A TOML inline table of JSON-compatible values (strings, lists of strings)."""
    return "{ " + ", ".join(f"{key} = {json.dumps(value)}" for key, value in table.items()) + " }"


def cds_source(request: Mapping[str, Any] = REQUEST, defaults: str = FAST, **options: Any) -> str:
    lines = [
        defaults,
        "[sources.era5]",
        'plugin = "copernicus.cds"',
        f'dataset = "{DATASET}"',
        'token = "${CDSAPI_KEY}"',
        "poll_interval = 0.01",
        "poll_max = 0.02",
        f"request = {inline(request)}",
    ]
    lines += [f"{name} = {json.dumps(value)}" for name, value in options.items()]
    return "\n".join(lines) + "\n"


def serve_job(
    httpx_mock: HTTPXMock,
    job: str,
    body: bytes,
    *,
    phases: tuple[str, ...] = ("running",),
    href: str | None = None,
    **result_options: Any,
) -> str:
    """Submit -> poll each phase -> successful -> results -> the file on the object store."""
    href = href or f"{OBJECT_STORE}/{hashlib.sha1(job.encode()).hexdigest()}.nc"
    httpx_mock.add_response(method="POST", url=SUBMIT, status_code=201, json=submitted(job))
    for phase in (*phases, "successful"):
        httpx_mock.add_response(method="GET", url=job_url(job), json=job_status(job, phase))
    httpx_mock.add_response(
        method="GET", url=f"{job_url(job)}/results", json=results(href, body, **result_options)
    )
    return href


def raw(tmp_path: Path) -> Path:
    return tmp_path / "astroingest-data" / "raw" / "era5"


def only_result(report: RunReport) -> AssetResult:
    [result] = report.assets
    return result


def expected_key(request: Mapping[str, Any], ext: str = ".nc") -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{DATASET}/{hashlib.sha256(canonical.encode()).hexdigest()[:12]}{ext}"


@pytest.fixture(autouse=True)
def cds_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDSAPI_KEY", TOKEN)


# -- the job flow ---------------------------------------------------------------------------


def test_a_job_goes_through_every_phase_and_its_result_lands(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """Synthetic (apis.md 5b): 201 accepted -> accepted -> running -> successful -> results."""
    body = netcdf4_body()
    href = serve_job(httpx_mock, "job-phases", body, phases=("accepted", "running"))
    httpx_mock.add_response(
        method="GET", url=href, content=body, headers={"Content-Type": "application/x-netcdf"}
    )

    report = astroingest_run(cds_source())

    result = only_result(report)
    assert result.status == "stored", result.error
    assert result.key == expected_key(REQUEST)
    assert result.size == len(body)
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert result.validator == "netcdf_hdf5"
    assert (raw(tmp_path) / expected_key(REQUEST)).read_bytes() == body

    [post] = httpx_mock.get_requests(method="POST")
    assert json.loads(post.content) == {"inputs": REQUEST}
    assert post.headers["PRIVATE-TOKEN"] == TOKEN
    polls = httpx_mock.get_requests(method="GET", url=job_url("job-phases"))
    assert len(polls) == 3 and all(p.headers["PRIVATE-TOKEN"] == TOKEN for p in polls)
    [download] = httpx_mock.get_requests(url=href)
    assert "PRIVATE-TOKEN" not in download.headers  # the object store is another host

    provenance = result.provenance or {}
    assert provenance["provider"] == "Copernicus Climate Data Store"
    assert provenance["endpoint"] == SUBMIT
    assert provenance["dataset"] == DATASET
    assert provenance["request"] == REQUEST
    assert provenance["job_id"] == "job-phases"
    assert provenance["job_finished"] == FINISHED
    assert provenance["file:checksum"] == hashlib.md5(body).hexdigest()
    assert provenance["dataset_page"] == f"https://cds.climate.copernicus.eu/datasets/{DATASET}"
    assert provenance["citation"].startswith(
        "Generated using Copernicus Climate Change Service information 2025."
    )
    assert TOKEN not in report.to_json()


def test_the_key_is_stable_across_runs_and_the_rerun_is_unchanged(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """Synthetic (apis.md 5b): two runs, two job ids, two random result file names.

    The second run writes the request's keys in another order: same request, same key.
    """
    body = netcdf4_body()
    for job in ("job-run-1", "job-run-2"):
        href = serve_job(httpx_mock, job, body)
        httpx_mock.add_response(method="GET", url=href, content=body)

    first = only_result(astroingest_run(cds_source()))
    second = only_result(astroingest_run(cds_source(dict(reversed(REQUEST.items())))))

    assert first.status == "stored", first.error
    assert second.status == "unchanged", second.error
    assert first.key == second.key == expected_key(REQUEST)
    assert (second.provenance or {})["job_id"] == "job-run-2"
    assert [p.name for p in (raw(tmp_path) / DATASET).iterdir()] == [
        expected_key(REQUEST).split("/")[1]
    ]


def test_a_zip_result_gets_a_zip_key_even_when_netcdf_was_asked_for(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic (apis.md 5b) results whose ``type`` is application/zip: the bytes decide."""
    body = b"PK\x05\x06" + bytes(18)  # an empty zip archive: only its end record
    href = serve_job(httpx_mock, "job-zip", body, media_type="application/zip")
    httpx_mock.add_response(method="GET", url=href, content=body)

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "stored", result.error
    assert result.key == expected_key(REQUEST, ".zip")
    assert result.validator == "zip"


@pytest.mark.parametrize(
    ("request_", "media_type", "href", "ext"),
    [
        ({"data_format": "netcdf"}, "application/netcdf", "https://o/x.nc", ".nc"),
        ({"data_format": "netcdf"}, None, "https://o/x", ".nc"),
        ({"data_format": "grib"}, None, "https://o/x", ".grib"),
        ({"data_format": ["GRIB"]}, None, "https://o/x", ".grib"),
        ({"data_format": "grib", "download_format": "zip"}, None, "https://o/x", ".zip"),
        ({"format": "netcdf"}, None, "https://o/x", ".nc"),
        ({"data_format": "netcdf"}, "application/zip", "https://o/x.zip", ".zip"),
        ({}, "application/x-grib", "https://o/x", ".grib"),
        ({}, None, "https://o/abc123.grib", ".grib"),
        ({}, None, "https://o/abc123", ".bin"),
    ],
)
def test_result_extension(
    request_: dict[str, Any], media_type: str | None, href: str, ext: str
) -> None:
    assert result_extension(request_, media_type, href) == ext


def test_a_job_status_404_now_and_then_is_waited_out(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic (apis.md 5b: "404 on job polling happens occasionally and is transient")."""
    body = netcdf4_body()
    job = "job-flaky"
    httpx_mock.add_response(method="POST", url=SUBMIT, status_code=201, json=submitted(job))
    httpx_mock.add_response(
        method="GET", url=job_url(job), status_code=404, json=problem(404, "job not found")
    )
    httpx_mock.add_response(method="GET", url=job_url(job), json=job_status(job, "successful"))
    href = f"{OBJECT_STORE}/flaky.nc"
    httpx_mock.add_response(method="GET", url=f"{job_url(job)}/results", json=results(href, body))
    httpx_mock.add_response(method="GET", url=href, content=body)

    assert only_result(astroingest_run(cds_source())).status == "stored"


def test_delete_job_deletes_it_after_the_download(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic (apis.md 5b: ``DELETE /retrieve/v1/jobs/<id>``), answered with the job."""
    body = netcdf4_body()
    href = serve_job(httpx_mock, "job-delete", body)
    httpx_mock.add_response(method="GET", url=href, content=body)
    httpx_mock.add_response(
        method="DELETE", url=job_url("job-delete"), json=job_status("job-delete", "dismissed")
    )

    assert only_result(astroingest_run(cds_source(delete_job=True))).status == "stored"

    order = [(r.method, str(r.url)) for r in httpx_mock.get_requests()]
    assert order[-2:] == [("GET", href), ("DELETE", job_url("job-delete"))]
    [delete] = httpx_mock.get_requests(method="DELETE")
    assert delete.headers["PRIVATE-TOKEN"] == TOKEN


# -- failures ---------------------------------------------------------------------------------


def test_a_failed_job_fails_the_source_with_the_job_s_error(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic: status ``failed``; its results URL answers an RFC 7807 problem (apis.md 5b)
    whose title and last traceback line the official client shows; nothing is downloaded."""
    job = "job-failed"
    httpx_mock.add_response(method="POST", url=SUBMIT, status_code=201, json=submitted(job))
    httpx_mock.add_response(method="GET", url=job_url(job), json=job_status(job, "running"))
    httpx_mock.add_response(method="GET", url=job_url(job), json=job_status(job, "failed"))
    error = problem(
        400,
        "The job failed with: MultiAdaptorNoDataError",
        traceback="Traceback (most recent call last):\n  ...\n"
        "MultiAdaptorNoDataError: no data is available within your requested subset\n",
    )
    httpx_mock.add_response(
        method="GET", url=f"{job_url(job)}/results", status_code=400, json=error
    )

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "failed" and result.key is None
    assert result.error is not None
    assert f'CDS job {job} for dataset "{DATASET}" failed' in result.error
    assert "no data is available within your requested subset" in result.error


@pytest.mark.parametrize("status", ["dismissed", "deleted"])
def test_a_dismissed_or_deleted_job_fails_the_source(
    httpx_mock: HTTPXMock, astroingest_run: Run, status: str
) -> None:
    """Synthetic job documents with the end states apis.md 5b lists besides failed."""
    job = f"job-{status}"
    httpx_mock.add_response(method="POST", url=SUBMIT, status_code=201, json=submitted(job))
    httpx_mock.add_response(method="GET", url=job_url(job), json=job_status(job, status))

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "failed"
    assert f"ended '{status}'" in (result.error or "")


def queue_limited(httpx_mock: HTTPXMock) -> None:
    """Synthetic 400 problem with the queue-limit text apis.md 5b quotes [unverified there]."""
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT,
        status_code=400,
        json=problem(
            400,
            "The job has been rejected",
            "Number queued requests for this dataset is temporarily limited.",
        ),
    )


def test_the_queue_limit_400_is_retried_then_the_job_succeeds(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic 400 problem with the queue-limit text apis.md 5b quotes [unverified there];
    the second POST waits queue_retry_after (0.5 s here), not the run's 0.01 s backoff."""
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT,
        status_code=400,
        json=problem(
            400,
            "The job has been rejected",
            "Number queued requests for this dataset is temporarily limited. "
            "Please configure your scripts accordingly",
        ),
    )
    body = netcdf4_body()
    href = serve_job(httpx_mock, "job-after-queue", body)
    httpx_mock.add_response(method="GET", url=href, content=body)

    started = time.monotonic()
    result = only_result(astroingest_run(cds_source(queue_retry_after=0.5)))

    assert result.status == "stored", result.error
    assert time.monotonic() - started >= 0.45
    assert len(httpx_mock.get_requests(method="POST", url=SUBMIT)) == 2


def test_the_queue_limit_waits_two_minutes_by_default_like_the_official_client() -> None:
    config = CdsConfig(plugin="copernicus.cds", dataset=DATASET, request=REQUEST, token=TOKEN)
    assert config.queue_retry_after == 120.0


def test_the_queue_limit_fails_the_source_once_retries_are_spent(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """The same synthetic queue-limit 400, three times: retries = 2 allows three POSTs."""
    for _ in range(3):
        queue_limited(httpx_mock)

    result = only_result(astroingest_run(cds_source(queue_retry_after=0.01)))

    assert result.status == "failed"
    assert f'the queue for dataset "{DATASET}" is full for now' in (result.error or "")


def test_an_invalid_request_400_fails_at_once_with_the_server_s_message(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic 400 problem carrying the permanent message apis.md 5b quotes (open-meteo)."""
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT,
        status_code=400,
        json=problem(
            400,
            "invalid request",
            "Request has not produced a valid combination of values, please check your selection.",
        ),
    )

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "failed"
    error = result.error or ""
    assert f'CDS rejected the request for dataset "{DATASET}" (HTTP 400' in error
    assert "has not produced a valid combination of values" in error
    assert "check `request`" in error
    assert len(httpx_mock.get_requests(method="POST")) == 1


def test_licences_not_accepted_names_the_dataset_and_what_to_do(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic 403 problem titled "required licences not accepted" (apis.md 5b)."""
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT,
        status_code=403,
        json=problem(403, "required licences not accepted"),
    )

    result = only_result(astroingest_run(cds_source()))

    error = result.error or ""
    assert result.status == "failed"
    assert f'the licence of dataset "{DATASET}" is not accepted' in error
    assert f"https://cds.climate.copernicus.eu/datasets/{DATASET}?tab=download" in error
    assert "accept it" in error and "required licences not accepted" in error
    assert len(httpx_mock.get_requests(method="POST")) == 1


def test_a_bad_token_is_a_clear_error_that_never_shows_the_token(
    httpx_mock: HTTPXMock, astroingest_run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    """Synthetic 401 problem; its detail even echoes the token, which must still not show."""
    caplog.set_level(logging.DEBUG)
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT,
        status_code=401,
        json=problem(401, "authentication failed", f"invalid token {TOKEN}"),
    )

    report = astroingest_run(cds_source())

    error = only_result(report).error or ""
    assert "CDS refused the access token (HTTP 401" in error
    assert "set CDSAPI_KEY" in error
    assert TOKEN not in error
    assert TOKEN not in report.to_json()
    assert TOKEN not in caplog.text


def test_a_503_storm_on_submit_is_not_retried_twice_over(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """The polite client retries 5xx itself (retries = 1: two POSTs); no second layer on top."""
    for _ in range(2):
        httpx_mock.add_response(method="POST", url=SUBMIT, status_code=503)

    result = only_result(astroingest_run(cds_source(defaults=FAST.replace("= 2", "= 1"))))

    assert result.status == "failed"
    assert "CDS: submitting the request failed: HTTP 503" in (result.error or "")
    assert len(httpx_mock.get_requests(method="POST")) == 2


def test_a_429_on_submit_is_retried_after_its_retry_after(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic 429 (apis.md 5b: "Rate limit exceeded. Please wait 3 seconds."), Retry-After 0."""
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT,
        status_code=429,
        headers={"Retry-After": "0"},
        json=problem(429, "Rate limit exceeded. Please wait 3 seconds."),
    )
    body = netcdf4_body()
    href = serve_job(httpx_mock, "job-after-429", body)
    httpx_mock.add_response(method="GET", url=href, content=body)

    assert only_result(astroingest_run(cds_source())).status == "stored"
    assert len(httpx_mock.get_requests(method="POST")) == 2


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        ({"status_code": 500, "json": problem(500, "Internal Server Error")}, "HTTP 500"),
        ({"status_code": 502, "text": "Bad Gateway"}, "HTTP 502"),
        ({"status_code": 504, "text": "Gateway Timeout"}, "HTTP 504"),
        # A 503 that names a job: the CDS created it before failing the answer.
        ({"status_code": 503, "json": submitted("job-503")}, "HTTP 503"),
    ],
    ids=["500", "502", "504", "503-with-a-job"],
)
def test_a_submission_the_cds_may_have_taken_is_not_sent_again(
    httpx_mock: HTTPXMock, astroingest_run: Run, answer: dict[str, Any], what: str
) -> None:
    """Synthetic error answers to the POST (retries = 2 would allow three POSTs): each may
    come after the job was queued, so a second POST could run it twice."""
    httpx_mock.add_response(method="POST", url=SUBMIT, **answer)

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "failed"
    error = result.error or ""
    assert f"CDS: submitting the request failed ({what}" in error
    assert "not submitted again" in error
    assert "https://cds.climate.copernicus.eu/requests" in error
    assert len(httpx_mock.get_requests(method="POST")) == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("timed out waiting for the answer"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset by peer"),
    ],
    ids=["read-timeout", "disconnected", "reset"],
)
def test_a_connection_lost_after_the_post_was_sent_fails_without_a_second_job(
    httpx_mock: HTTPXMock, astroingest_run: Run, failure: Exception
) -> None:
    """The request went out, no answer came back: the CDS may have queued the job."""
    httpx_mock.add_exception(failure, method="POST", url=SUBMIT)

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "failed"
    assert "the CDS may have queued the job anyway" in (result.error or "")
    assert len(httpx_mock.get_requests(method="POST")) == 1


def test_a_connection_never_made_is_submitted_again(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Connection refused: nothing reached the CDS, so the POST is safe to send again."""
    httpx_mock.add_exception(httpx.ConnectError("connection refused"), method="POST", url=SUBMIT)
    body = netcdf4_body()
    href = serve_job(httpx_mock, "job-after-refusal", body)
    httpx_mock.add_response(method="GET", url=href, content=body)

    assert only_result(astroingest_run(cds_source())).status == "stored"
    assert len(httpx_mock.get_requests(method="POST")) == 2


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://attacker.example.org/api/retrieve/v1/jobs/job-moved",
        "http://cds.climate.copernicus.eu/api/retrieve/v1/jobs/job-moved",
        "https://cds.climate.copernicus.eu:8443/api/retrieve/v1/jobs/job-moved",
    ],
    ids=["other-host", "downgrade-to-http", "other-port"],
)
def test_the_token_does_not_follow_a_redirect_off_the_cds_origin(
    httpx_mock: HTTPXMock, astroingest_run: Run, elsewhere: str
) -> None:
    """Synthetic job documents; the status poll answers a 302 to another origin (built
    here: the CDS is not known to redirect), which serves the finished job."""
    job = "job-moved"
    body = netcdf4_body()
    httpx_mock.add_response(method="POST", url=SUBMIT, status_code=201, json=submitted(job))
    httpx_mock.add_response(
        method="GET", url=job_url(job), status_code=302, headers={"Location": elsewhere}
    )
    httpx_mock.add_response(method="GET", url=elsewhere, json=job_status(job, "successful"))
    href = f"{OBJECT_STORE}/moved.nc"
    httpx_mock.add_response(method="GET", url=f"{job_url(job)}/results", json=results(href, body))
    httpx_mock.add_response(method="GET", url=href, content=body)

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "stored", result.error
    [poll] = httpx_mock.get_requests(url=job_url(job))
    assert poll.headers[TOKEN_HEADER] == TOKEN
    [redirected] = httpx_mock.get_requests(url=elsewhere)
    assert TOKEN_HEADER not in redirected.headers
    assert TOKEN not in str(redirected.headers)


def test_a_link_to_another_origin_gets_no_token(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """The synthetic 201 reply with its rel=monitor link edited to point off the CDS."""
    job = "job-foreign-monitor"
    foreign = f"https://elsewhere.example.org/api/retrieve/v1/jobs/{job}"
    reply = submitted(job)
    reply["links"][1]["href"] = foreign
    httpx_mock.add_response(method="POST", url=SUBMIT, status_code=201, json=reply)
    httpx_mock.add_response(method="GET", url=foreign, json=job_status(job, "dismissed"))

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "failed"
    [poll] = httpx_mock.get_requests(url=foreign)
    assert TOKEN_HEADER not in poll.headers


def test_a_job_that_outlives_job_timeout_fails_the_source(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic job documents that stay ``running``."""
    job = "job-slow"
    httpx_mock.add_response(method="POST", url=SUBMIT, status_code=201, json=submitted(job))
    httpx_mock.add_response(
        method="GET", url=job_url(job), json=job_status(job, "running"), is_reusable=True
    )

    result = only_result(astroingest_run(cds_source(job_timeout=0.1)))

    assert result.status == "failed"
    assert f"CDS job {job} for dataset" in (result.error or "")
    assert "still running after 0.1 s (job_timeout)" in (result.error or "")


def test_a_size_mismatch_fails_the_asset(httpx_mock: HTTPXMock, astroingest_run: Run) -> None:
    """Synthetic results whose ``file:size`` is one byte more than the file served."""
    body = netcdf4_body()
    href = serve_job(httpx_mock, "job-size", body, size=len(body) + 1)
    httpx_mock.add_response(method="GET", url=href, content=body, is_reusable=True)

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "failed"
    assert f"size mismatch: got {len(body)} bytes, expected {len(body) + 1}" in (result.error or "")


def test_a_checksum_mismatch_fails_the_asset_when_verify_checksum_is_on(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """Synthetic results whose ``file:checksum`` is the MD5 of other bytes."""
    body = netcdf4_body()
    wrong = hashlib.md5(b"other bytes").hexdigest()
    href = serve_job(httpx_mock, "job-md5", body, checksum=wrong)
    httpx_mock.add_response(method="GET", url=href, content=body, is_reusable=True)

    result = only_result(astroingest_run(cds_source(verify_checksum=True)))

    assert result.status == "failed"
    assert f"md5 mismatch: got {hashlib.md5(body).hexdigest()}, expected {wrong}" in (
        result.error or ""
    )
    assert not raw(tmp_path).exists() or not any(raw(tmp_path).rglob("*.nc"))


def test_verify_checksum_reads_the_checksum_as_hex_without_leading_zeros(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """cacholote writes ``f"{checksum:x}"``: an MD5 starting with 0 loses its leading zeros."""
    size = next(n for n in range(2048, 4096) if hashlib.md5(netcdf4_body(n)).hexdigest()[0] == "0")
    body = netcdf4_body(size)
    stripped = hashlib.md5(body).hexdigest().lstrip("0")
    href = serve_job(httpx_mock, "job-md5-ok", body, checksum=stripped)
    httpx_mock.add_response(method="GET", url=href, content=body)

    result = only_result(astroingest_run(cds_source(verify_checksum=True)))

    assert result.status == "stored", result.error


def test_the_checksum_is_recorded_not_verified_by_default(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """Synthetic results with an ETag-derived value that is no MD5 of the content."""
    body = netcdf4_body()
    etag_like = "9b2cf535f27731c974343645a3985328"  # a multipart ETag's leading hex
    href = serve_job(httpx_mock, "job-etag", body, checksum=etag_like)
    httpx_mock.add_response(method="GET", url=href, content=body)

    result = only_result(astroingest_run(cds_source()))

    assert result.status == "stored", result.error
    assert (result.provenance or {})["file:checksum"] == etag_like


# -- dry run and configuration ----------------------------------------------------------------


def test_dry_run_submits_nothing_and_logs_the_request(
    httpx_mock: HTTPXMock,
    astroingest_host: Host,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No payload at all: pytest-httpx fails the test on any request."""
    caplog.set_level(logging.INFO, logger="astroingest")
    path = tmp_path / "sources.toml"
    path.write_text(cds_source())
    config = load_config(path, astroingest_host)
    engine = Engine(config, astroingest_host, LogProgress(), Redactor(config.secrets))

    report = asyncio.run(engine.run(RunOptions(dry_run=True)))

    assert report.status == "dry-run"
    assert report.assets == []
    assert httpx_mock.get_requests() == []
    assert "dry run: not submitting; would POST " + SUBMIT in caplog.text
    assert json.dumps({"inputs": REQUEST}, sort_keys=True, separators=(",", ":")) in caplog.text
    assert expected_key(REQUEST) in caplog.text
    assert TOKEN not in caplog.text


def test_a_toml_date_in_the_request_is_a_config_error_that_says_to_quote_it(
    astroingest_run: Run,
) -> None:
    text = cds_source().replace("request = { ", "request = { date = 2024-01-01, ")
    with pytest.raises(ConfigError, match=r'request\.date.*quote it: "2024-01-01"'):
        astroingest_run(text)


def test_an_unknown_key_is_a_config_error(astroingest_run: Run) -> None:
    with pytest.raises(ConfigError, match="poll_every"):
        astroingest_run(cds_source(poll_every=5))
