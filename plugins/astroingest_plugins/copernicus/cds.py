"""``plugin = "copernicus.cds"``: one Climate Data Store request, run as a job, landed as a file.

The Climate Data Store (the "new CDS", live since September 2024) is an OGC API -
Processes service. The flow, as documented in the shared ``apis.md`` section 5b:

1. ``POST {base}/retrieve/v1/processes/{dataset}/execution`` with ``{"inputs": request}``
   and the header ``PRIVATE-TOKEN: <token>``; the answer is 201 with ``jobID``, ``status``
   and a ``rel=monitor`` link (``{base}/retrieve/v1/jobs/{jobID}``);
2. ``GET`` the monitor link, waiting longer each time, while the status is ``accepted``
   or ``running``; it ends ``successful``, ``failed``, ``dismissed`` or ``deleted``;
3. ``GET {monitor}/results`` (or the job's ``rel=results`` link): ``asset.value`` holds
   ``href`` (on the object store, downloaded with a plain GET, so without the token),
   ``type``, ``file:size`` and ``file:checksum``.

Example::

    [sources.era5_t2m]
    plugin = "copernicus.cds"
    dataset = "reanalysis-era5-single-levels"
    token = "${CDSAPI_KEY}"     # your personal access token, https://cds.climate.copernicus.eu/profile
    request = { product_type = ["reanalysis"], variable = ["2m_temperature"], year = ["2024"],
                month = ["01"], day = ["01"], time = ["12:00"], data_format = "netcdf",
                download_format = "unarchived" }

The key is ``<dataset>/<first 12 hex of sha256(canonical JSON of request)>.<ext>``, so the
same request lands under the same key on every run, whatever the job id or the random
file name the CDS gives the result. A rerun submits the request again (the CDS answers
identical requests from its cache) and the engine finds the bytes unchanged.

The token goes only to ``base_url``'s origin (scheme, host and port): as a plain header,
which the engine drops on a redirect to another origin, and never to a link (monitor,
results) that points elsewhere. The submission is one POST, never retried blindly: only
answers that say no job was created are submitted again (the queue-limit 400, after
``queue_retry_after`` seconds; 429; a 503 without a job; a connection never made). An
error after the CDS may have accepted the job fails the source instead, so that a retry
cannot queue the same job twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import Field, field_validator

from astroingest import (
    Asset,
    FetchError,
    HTTPStatusError,
    PlanContext,
    RetryableError,
    SourceConfig,
    SourceType,
    hookimpl,
)
from astroingest._retry import describe

DEFAULT_BASE_URL = "https://cds.climate.copernicus.eu/api"
TOKEN_ENV = "CDSAPI_KEY"
"""The environment variable the official clients (cdsapi, ecmwf-datastores-client) read."""
TOKEN_HEADER = "PRIVATE-TOKEN"

PENDING = frozenset({"accepted", "running"})
MISSING_POLLS = 3
"""A job status answering 404 now and then is transient (apis.md 5b); this many in a row not."""
BACKOFF_FACTOR = 1.5  # as the official client grows its sleep between polls
QUEUE_RETRY_AFTER = 120.0
"""Seconds before a request refused by the queue limit is submitted again (as cdsapi sleeps)."""
RESUBMIT_STATUSES = frozenset({429, 503})
"""5xx/429 answers to a submission that say the request was not taken: safe to POST again.
A 503 that nonetheless names a job is not (see ``_Cds.submit_once``)."""
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport failures before a byte of the request reached the server: safe to POST again."""

# apis.md 5b [unverified]: the per-dataset queue limit is a 400 whose message says
# "Number queued requests for this dataset is temporarily limited"; other 400s are
# permanent ("Request has not produced a valid combination of values").
QUEUE_LIMIT_MARKERS = ("temporarily limited", "queued requests")

EXTENSIONS = {
    "netcdf": ".nc",
    "netcdf4": ".nc",
    "netcdf_legacy": ".nc",
    "nc": ".nc",
    "grib": ".grib",
    "grib1": ".grib",
    "grib2": ".grib",
    "zip": ".zip",
    "netcdf.zip": ".zip",
    "tgz": ".tar.gz",
    "csv": ".csv",
    "json": ".json",
}
"""Request format values (``data_format``, legacy ``format``) to file extensions."""
MEDIA_EXTENSIONS = {
    "application/netcdf": ".nc",
    "application/x-netcdf": ".nc",
    "application/x-grib": ".grib",
    "application/zip": ".zip",
    "application/x-tar": ".tar",
    "application/gzip": ".tar.gz",
    "text/csv": ".csv",
    "application/json": ".json",
}
"""The results' ``type`` to file extensions (cacholote names .nc/.grib/.zip like this)."""

SERVICES = {
    "cds.climate.copernicus.eu": (
        "Copernicus Climate Data Store",
        "Copernicus Climate Change Service",
    ),
    "ads.atmosphere.copernicus.eu": (
        "Copernicus Atmosphere Data Store",
        "Copernicus Atmosphere Monitoring Service",
    ),
    "ewds.climate.copernicus.eu": (
        "Copernicus Early Warning Data Store",
        "Copernicus Emergency Management Service",
    ),
}
"""The same API serves the ADS and the EWDS; the citation names the service behind each."""


class CdsConfig(SourceConfig):
    """One CDS retrieve request. ``base_url`` defaults to the CDS API root."""

    dataset: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description=(
            'The dataset (process) id, as in its page URL: "reanalysis-era5-single-levels".'
        ),
    )
    request: dict[str, Any] = Field(
        min_length=1,
        description=(
            'The request, as the dataset\'s "Show API request" gives it: a TOML inline table '
            "of strings, numbers, booleans and lists. Its data_format/download_format picks "
            "the file extension."
        ),
    )
    token: str = Field(
        min_length=1,
        description=(
            f'Your CDS personal access token: write "${{{TOKEN_ENV}}}" and set {TOKEN_ENV} in the '
            "environment (copy the token from https://cds.climate.copernicus.eu/profile)."
        ),
    )
    poll_interval: float = Field(
        default=1.0, gt=0, le=3600, description="Seconds before the first status poll."
    )
    poll_max: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Longest wait between status polls; the wait grows 1.5x per poll up to it.",
    )
    job_timeout: float = Field(
        default=12 * 3600.0,
        gt=0,
        le=14 * 24 * 3600.0,
        description=(
            "Seconds to wait for the job to finish; after that the source fails (the job "
            "keeps running on the CDS)."
        ),
    )
    verify_checksum: bool = Field(
        default=False,
        description=(
            "Also verify the results' file:checksum as the file's MD5. Off by default: the "
            "CDS publishes its object store's checksum value (an S3 ETag), which is the "
            "MD5 of the content only for files uploaded in one part. file:size is always "
            "verified."
        ),
    )
    delete_job: bool = Field(
        default=False,
        description="Delete the job on the CDS once its result has been fetched.",
    )
    queue_retry_after: float = Field(
        default=QUEUE_RETRY_AFTER,
        ge=0,
        le=3600,
        description=(
            "Seconds to wait before submitting again when the dataset's queue is full (the "
            'CDS answers 400 "temporarily limited"); resubmitted up to `retries` times.'
        ),
    )

    @field_validator("request")
    @classmethod
    def _json_request(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_json(value, "request")
        return value


def _check_json(value: Any, where: str) -> None:
    """The request travels as JSON and is hashed for the key: only JSON values allowed."""
    if isinstance(value, dt.date | dt.time):
        raise ValueError(
            f'{where}: TOML dates and times are not JSON; quote it: "{value.isoformat()}"'
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a JSON number")
    if isinstance(value, dict):
        for name, item in value.items():
            _check_json(item, f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
    elif not isinstance(value, str | int | float | bool):
        raise ValueError(f"{where}: a {type(value).__name__} is not a JSON value")


def canonical_json(request: Mapping[str, Any]) -> str:
    """Key order does not matter (TOML tables may be written in any order); list order does."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_digest(request: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(request).encode("utf-8")).hexdigest()[:12]


def _format_value(request: Mapping[str, Any], name: str) -> str | None:
    value = request.get(name)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value.lower() if isinstance(value, str) else None


def request_extension(request: Mapping[str, Any]) -> str | None:
    """The extension the request asks for: a zip download wins over the data format."""
    if _format_value(request, "download_format") == "zip":
        return ".zip"
    for name in ("data_format", "format"):
        found = EXTENSIONS.get(_format_value(request, name) or "")
        if found:
            return found
    return None


def result_extension(request: Mapping[str, Any], media_type: str | None, href: str) -> str:
    """The extension for the key: the results' type when known, else the request's format.

    The type is what the bytes are (a netcdf request whose fields don't fit one file comes
    back zipped) and, like the request, the same on every run.
    """
    base = (media_type or "").split(";")[0].strip().lower()
    found = MEDIA_EXTENSIONS.get(base) or request_extension(request)
    if found:
        return found
    suffix = re.search(r"(\.[A-Za-z0-9]{1,8})$", urlsplit(href).path)
    return suffix.group(1).lower() if suffix else ".bin"


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return (parsed.scheme, parsed.host, parsed.port)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status < 400


class _QueueLimited(RetryableError):
    """The dataset's queue is full for now: submit again later."""


def _body(content: bytes) -> Any:
    """A reply's body: its JSON document, else its text (CDS problems are JSON)."""
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def problem_text(body: Any) -> str:
    """One line from an RFC 7807 problem (title, detail, last traceback line), or the body."""
    if isinstance(body, dict):
        parts: list[str] = []
        for name in ("title", "detail"):
            if isinstance(body.get(name), str) and body[name].strip():
                parts.append(body[name])
        traceback = body.get("traceback")
        if isinstance(traceback, str) and traceback.strip():
            parts.append(traceback.strip().splitlines()[-1])
        text = ": ".join(dict.fromkeys(" ".join(p.split()) for p in parts))
        if not text:
            text = json.dumps(body)
    else:
        text = " ".join(str(body or "").split())
    return text[:500] or "no details given"


class _Cds:
    """The API calls of one source's plan."""

    def __init__(self, config: CdsConfig, ctx: PlanContext) -> None:
        self.config = config
        self.ctx = ctx
        self.base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.site = self.base.removesuffix("/api")
        self.dataset = config.dataset
        self.page = f"{self.site}/datasets/{self.dataset}"
        self.submit_url = f"{self.base}/retrieve/v1/processes/{self.dataset}/execution"
        self.origin = _origin(self.base)

    async def send(self, method: str, url: str, **kwargs: Any) -> _Reply:
        """One polite call; a 4xx comes back as a reply (with its problem body), not raised.

        The token is a plain header, so the engine drops it on a redirect to another
        origin; a URL the CDS named that is not on ``base_url``'s origin gets none at all.
        """
        headers = {TOKEN_HEADER: self.config.token} if _origin(url) == self.origin else {}
        try:
            response = await self.ctx.request(method, url, headers=headers, **kwargs)
        except HTTPStatusError as error:
            return _Reply(error.status_code, _body(error.body))
        return _Reply(response.status_code, _body(response.content))

    def rejection(self, reply: _Reply, what: str) -> FetchError:
        """The error for a 4xx: the message says what went wrong and what to do."""
        text = problem_text(reply.body)
        lowered = text.lower()
        status = reply.status
        if status == 400 and any(marker in lowered for marker in QUEUE_LIMIT_MARKERS):
            return _QueueLimited(
                f'CDS: the queue for dataset "{self.dataset}" is full for now (HTTP 400: {text})',
                self.config.queue_retry_after,
            )
        if status == 400:
            message = (
                f'CDS rejected the request for dataset "{self.dataset}" (HTTP 400: {text}); '
                f'check `request` against the form on {self.page}?tab=download ("Show API request")'
            )
        elif status == 403 and "licen" in lowered:
            message = (
                f'CDS: the licence of dataset "{self.dataset}" is not accepted for this account '
                f'(HTTP 403: {text}); log in, accept it under "Terms of use" on '
                f"{self.page}?tab=download, then run again"
            )
        elif status in (401, 403):
            message = (
                f"CDS refused the access token (HTTP {status}: {text}); set {TOKEN_ENV} to the "
                f"personal access token shown on {self.site}/profile"
            )
        elif status == 404 and what == self.submit_url:
            message = (
                f'CDS: no dataset "{self.dataset}" (HTTP 404: {text}); check `dataset` against '
                f"the id in the URL of its page on {self.site}/datasets"
            )
        else:
            message = f"CDS: HTTP {status} for {what}: {text}"
        return HTTPStatusError(message, status)

    async def submit(self) -> dict[str, Any]:
        """POST the request, submitting again (under the run's retry policy) only when the
        answer says no job was created; see :meth:`submit_once`."""
        body = {"inputs": dict(self.config.request)}
        async for attempt in self.ctx.client.retry.attempts(self.submit_url):
            with attempt:
                return await self.submit_once(body)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def submit_once(self, body: dict[str, Any]) -> dict[str, Any]:
        """One POST, never retried by the client: a second one could queue a second job.

        Raises RetryableError (submitted again) only where no job was created: the
        queue-limit 400, 429, a 503 that names no job, a connection never made. Anything
        else that leaves it unknown whether the CDS took the job fails the source.
        """
        try:
            reply = await self.send("POST", self.submit_url, json=body, retry=False)
        except RetryableError as error:
            if error.status_code in RESUBMIT_STATUSES and "jobID" not in _job_of(error.body):
                raise RetryableError(
                    f"CDS: submitting the request failed: {error}", error.retry_after
                ) from None
            raise self.uncertain(str(error)) from None
        except NOT_SENT as error:
            raise RetryableError(
                f"CDS: could not connect to submit the request ({describe(error)})"
            ) from None
        except httpx.HTTPError as error:
            raise self.uncertain(describe(error)) from None
        if not reply.ok:
            raise self.rejection(reply, self.submit_url)
        return self.document(reply, "the submitted job")

    def uncertain(self, what: str) -> FetchError:
        """The error for a submission the CDS may have accepted: not sent again."""
        return FetchError(
            f"CDS: submitting the request failed ({what}); the CDS may have queued the job "
            f"anyway, so it is not submitted again (that could run it twice): check "
            f"{self.site}/requests, then run again"
        )

    def document(self, reply: _Reply, what: str) -> dict[str, Any]:
        if not isinstance(reply.body, dict):
            raise FetchError(f"CDS: {what} is not a JSON object: {problem_text(reply.body)}")
        return reply.body

    async def wait(self, job: dict[str, Any], monitor: str) -> dict[str, Any]:
        """Poll until the job leaves accepted/running, waiting 1.5x longer each time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.job_timeout
        delay = min(self.config.poll_interval, self.config.poll_max)
        missing = 0
        last = None
        while (status := job.get("status")) in PENDING:
            if status != last:
                self.ctx.log.info("CDS job %s: %s", job_id(job), status)
                last = status
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise FetchError(
                    f'CDS job {job_id(job)} for dataset "{self.dataset}" is still {status} after '
                    f"{self.config.job_timeout:g} s (job_timeout); it goes on running on the "
                    "CDS: raise job_timeout, or run again later"
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * BACKOFF_FACTOR, self.config.poll_max)
            reply = await self.send("GET", monitor)
            if reply.status == 404 and missing < MISSING_POLLS:
                missing += 1
                continue
            missing = 0
            if not reply.ok:
                raise self.rejection(reply, monitor)
            job = self.document(reply, f"the status of job {job_id(job)}")
        return job

    async def failure(self, job: dict[str, Any], results_url: str) -> FetchError:
        """A failed job's error is the problem document its results URL answers with."""
        reply = await self.send("GET", results_url)
        return FetchError(
            f'CDS job {job_id(job)} for dataset "{self.dataset}" failed: {problem_text(reply.body)}'
        )

    async def results(self, results_url: str) -> dict[str, Any]:
        reply = await self.send("GET", results_url)
        if not reply.ok:
            raise self.rejection(reply, results_url)
        asset = self.document(reply, "the job's results").get("asset")
        value = asset.get("value") if isinstance(asset, dict) else None
        if not isinstance(value, dict) or not isinstance(value.get("href"), str):
            raise FetchError(
                f"CDS: the results at {results_url} have no asset.value.href: "
                f"{problem_text(reply.body)}"
            )
        return value

    def log_messages(self, job: Mapping[str, Any]) -> None:
        """The dataset's notices (outages, new versions) that come with a submitted job."""
        metadata = job.get("metadata")
        dataset = metadata.get("datasetMetadata") if isinstance(metadata, dict) else None
        messages = dataset.get("messages") if isinstance(dataset, dict) else None
        for message in messages if isinstance(messages, list) else []:
            if isinstance(message, dict) and message.get("content"):
                level = str(message.get("severity", "info")).lower()
                log = self.ctx.log.warning if level in ("warning", "error") else self.ctx.log.info
                log("CDS dataset %s: %s", self.dataset, " ".join(str(message["content"]).split()))


def _job_of(content: bytes) -> dict[str, Any]:
    """The job document an error body holds, if any (a job was created after all)."""
    body = _body(content)
    return body if isinstance(body, dict) else {}


def job_id(job: Mapping[str, Any]) -> str:
    return str(job.get("jobID") or "?")


def _link(document: Mapping[str, Any], rel: str) -> str | None:
    links = document.get("links")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("rel") == rel and isinstance(link.get("href"), str):
            return str(link["href"])
    return None


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _md5(checksum: Any) -> str:
    """cacholote writes the checksum as hex without leading zeros (an int once)."""
    text = f"{checksum:x}" if isinstance(checksum, int) else str(checksum or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,32}", text):
        raise FetchError(f"CDS: file:checksum {text!r} is not an MD5; set verify_checksum = false")
    return text.zfill(32)


def _service(base: str) -> tuple[str, str]:
    host = (urlsplit(base).hostname or "").lower()
    return SERVICES.get(host, SERVICES["cds.climate.copernicus.eu"])


def _provenance(
    cds: _Cds, job: Mapping[str, Any], value: Mapping[str, Any], results_url: str
) -> dict[str, Any]:
    provider, service = _service(cds.base)
    finished = str(job.get("finished") or "")
    year = finished[:4] if re.match(r"\d{4}", finished) else str(dt.datetime.now(dt.UTC).year)
    provenance: dict[str, Any] = {
        "provider": provider,
        "endpoint": cds.submit_url,
        "dataset": cds.dataset,
        "request": dict(cds.config.request),
        "job_id": job_id(job),
        "results": results_url,
        "dataset_page": cds.page,
        "citation": (
            f"Generated using {service} information {year}. Cite the dataset with the "
            f"citation and DOI on {cds.page}"
        ),
    }
    for name in ("created", "started", "finished"):
        if isinstance(job.get(name), str):
            provenance[f"job_{name}"] = job[name]
    for name in ("type", "file:size", "file:checksum"):
        if name in value:
            provenance[name] = value[name]
    return provenance


async def plan(config: CdsConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    cds = _Cds(config, ctx)
    if ctx.dry_run:
        ext = request_extension(config.request) or ".<type of the result>"
        ctx.log.info(
            "dry run: not submitting; would POST %s with %s and store %s/%s%s",
            cds.submit_url,
            canonical_json({"inputs": config.request}),
            config.dataset,
            request_digest(config.request),
            ext,
        )
        return
    job = await cds.submit()
    cds.log_messages(job)
    monitor = urljoin(
        cds.submit_url, _link(job, "monitor") or f"{cds.base}/retrieve/v1/jobs/{job_id(job)}"
    )
    ctx.log.info("CDS job %s submitted for dataset %s", job_id(job), config.dataset)
    job = await cds.wait(job, monitor)
    results_url = urljoin(monitor, _link(job, "results") or f"{monitor}/results")
    status = job.get("status")
    if status == "failed":
        raise await cds.failure(job, results_url)
    if status != "successful":
        raise FetchError(
            f'CDS job {job_id(job)} for dataset "{config.dataset}" ended {status!r}, not '
            "successful; submit the request again"
        )
    value = await cds.results(results_url)
    if config.delete_job:
        ctx.on_finish(lambda: _delete(cds, monitor))
    href = urljoin(results_url, value["href"])
    media_type = value.get("type") if isinstance(value.get("type"), str) else None
    ext = result_extension(config.request, media_type, href)
    yield Asset(
        url=href,
        key=f"{config.dataset}/{request_digest(config.request)}{ext}",
        size=_size(value.get("file:size")),
        md5=_md5(value.get("file:checksum")) if config.verify_checksum else None,
        media_type=media_type,
        provenance=_provenance(cds, job, value, results_url),
    )


async def _delete(cds: _Cds, monitor: str) -> None:
    reply = await cds.send("DELETE", monitor)
    if not reply.ok:
        raise cds.rejection(reply, monitor)


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [
        SourceType(
            "copernicus.cds",
            CdsConfig,
            plan,
            "a Copernicus Climate Data Store (CDS/ADS/EWDS) retrieve request, run as a job",
        )
    ]
