"""``plugin = "tap"``: any IVOA TAP service, and the pieces NASA, ESA and ESO build on.

Sync
    The asset is the query URL itself,
    ``GET <url>/sync?REQUEST=doQuery&LANG=ADQL&FORMAT=<format>&QUERY=<adql>``, so the engine
    streams, validates and checksums the result like any file. A VOTable whose
    ``QUERY_STATUS`` is ``ERROR`` fails a critical check (score 0, quarantined); one whose
    ``QUERY_STATUS`` is ``OVERFLOW`` (the result was cut at ``MAXREC`` or the service limit)
    fails the non-critical ``not_truncated`` check: 7 of the VOTable validator's 8 checks
    pass, quality 0.875, which the default ``min_quality = 0.95`` quarantines with
    "OVERFLOW: result truncated at the row limit" in the report: a table silently cut short
    is not data to build on. A source that wants a deliberately capped sample sets
    ``min_quality = 0.85`` and the truncated table is stored with quality 0.875.

Async (UWS)
    ``POST <url>/async`` with the same parameters and ``PHASE=RUN``. The 303 to the job is
    followed (or the job id is read from a 200/201 job document); a job still ``PENDING``
    gets ``POST <job>/phase PHASE=RUN``. ``<job>/phase`` is polled with exponential backoff
    (``poll_interval``, doubling, at most ``poll_max`` seconds apart) until COMPLETED, ERROR
    or ABORTED, or ``job_timeout`` seconds have passed. ERROR raises :class:`FetchError`
    with the job's ``uws:errorSummary`` text. The asset is ``<job>/results/result``; the job
    is DELETEd once the source's assets are done (``ctx.on_finish``), whatever happened.
    Under ``--dry-run`` no job is submitted: the query is logged and nothing is yielded.

``mode = "auto"``
    Sync when the query is expected to be small, async otherwise. "Expected rows" is the
    smaller of the outer ``SELECT TOP n`` and ``maxrec``, whichever are given; the query is
    big when neither is given or the expected rows exceed ``sync_row_limit`` (2000 by
    default, the Gaia archive's sync limit). See :func:`choose_mode`.

Keys
    ``<table>-<first 12 hex of sha256(query, format, maxrec)>.<ext>`` (:func:`result_key`):
    the same query gives the same key on every run and in either mode, so a rerun whose
    result did not change is "unchanged".

Compressed results
    The stored bytes are always the table the client sees decoded: ``Content-Encoding``
    is undone by httpx, and a body that is itself a gzip file (the Gaia archive's job
    documents say ``encoding="gzip"`` and astroquery gunzips whatever it gets) is inflated
    while it streams, so a ``.vot`` key always holds a VOTable. The checksum is of the
    decoded table.

Error documents
    A TAP service reports errors as a VOTable even when CSV or JSON was asked for. Such a
    body under a ``.csv`` or ``.json`` key fails the asset with the document's
    ``QUERY_STATUS`` text instead of landing as a one-column CSV. An error sent with an
    HTTP error status fails as "HTTP 400 Bad Request for <url>: TAP says: <that text>"
    (a 4xx is not retried, a 5xx is); a refused job submission says the same.

Building on this module: describe the service with :class:`TapService` and call
:func:`plan_query`, or :func:`sync_asset` / :func:`async_asset` directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args
from urllib.parse import urljoin

import httpx
import tenacity
from pydantic import ConfigDict, Field, field_validator, model_validator

from astroingest import (
    Asset,
    Conditions,
    Download,
    FetchError,
    HTTPStatusError,
    Opener,
    PlanContext,
    RetryableError,
    SourceConfig,
    SourceType,
    hookimpl,
)
from astroingest._sources import check_http_url

Format = Literal["csv", "votable", "json"]
Mode = Literal["sync", "async", "auto"]
FORMATS: Final[tuple[Format, ...]] = get_args(Format)

EXTENSIONS: Final[Mapping[str, str]] = {"csv": ".csv", "votable": ".vot", "json": ".json"}
MEDIA_TYPES: Final[Mapping[str, str]] = {
    "csv": "text/csv",
    "votable": "application/x-votable+xml",
    "json": "application/json",
}
DEFAULT_SYNC_ROW_LIMIT: Final = 2000
"""The row count above which ``mode = "auto"`` goes async (the Gaia archive's sync limit)."""

PENDING: Final = "PENDING"
COMPLETED: Final = "COMPLETED"
ERROR: Final = "ERROR"
ARCHIVED: Final = "ARCHIVED"
FINAL_PHASES: Final = frozenset({COMPLETED, ERROR, "ABORTED", ARCHIVED})
SUBMIT_RETRY_STATUSES: Final = frozenset({429, 503})
"""Answers to a job submission that say no job was created: it may be sent again."""
"""UWS phases after which polling stops. HELD, SUSPENDED, UNKNOWN… keep it going."""

_ERROR_DOC_CAP: Final = 256 * 1024
_OUT_CAP: Final = 1024 * 1024  # inflate at most this much per step: a gzip bomb stays a stream
_GZIP_MAGIC: Final = b"\x1f\x8b"
_TOP = re.compile(r"^\s*select\s+(?:(?:all|distinct)\s+)?top\s+(\d+)\b", re.IGNORECASE)
_FROM = re.compile(r"\bfrom\s+([\w.\"]+)", re.IGNORECASE)
_PHASE_WORD = re.compile(r"[A-Z]{3,16}")

# Indirection so tests can watch the backoff without waiting for it.
_sleep = asyncio.sleep
_clock = time.monotonic


# -- describing a service and a query -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TapService:
    """One TAP endpoint and its dialect.

    ``base`` is the service root (``…/tap``); sync and async live under it.
    ``upper_case_params`` sends ``QUERY``/``FORMAT``/``MAXREC`` (the IVOA spelling); the NASA
    Exoplanet Archive documents ``query=``/``format=``. ``doquery_params`` adds
    ``REQUEST=doQuery&LANG=ADQL``. ``headers`` and ``auth`` (credentials) go with every
    request to the service and with the result download; they are never logged or reported.
    """

    base: str
    provider: str = "TAP"
    upper_case_params: bool = True
    doquery_params: bool = True
    sync_row_limit: int = DEFAULT_SYNC_ROW_LIMIT
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    auth: httpx.Auth | None = field(default=None, repr=False)

    @property
    def sync_url(self) -> str:
        return f"{self.base.rstrip('/')}/sync"

    @property
    def async_url(self) -> str:
        return f"{self.base.rstrip('/')}/async"

    def params(self, query: str, fmt: Format, maxrec: int | None = None) -> dict[str, str]:
        """The query parameters in this service's spelling."""
        params = {"REQUEST": "doQuery", "LANG": "ADQL"} if self.doquery_params else {}
        params |= {"QUERY": query, "FORMAT": fmt}
        if maxrec is not None:
            params["MAXREC"] = str(maxrec)
        if not self.upper_case_params:
            params = {name.lower(): value for name, value in params.items()}
        return params

    def request_options(self) -> dict[str, Any]:
        """``headers``/``auth`` keyword arguments for ``ctx.request``."""
        return {"headers": dict(self.headers), "auth": self.auth}


@dataclass(frozen=True, slots=True)
class Polling:
    """How an async job is waited for: first pause, longest pause, total patience (seconds)."""

    interval: float = 1.0
    max_interval: float = 30.0
    timeout: float = 3600.0


def expected_rows(query: str, maxrec: int | None = None) -> int | None:
    """The most rows the query can return, from ``SELECT TOP n`` and ``maxrec``; None if unbounded.

    Only the outer SELECT counts: a TOP inside a subquery does not bound the result.
    """
    match = _TOP.match(query)
    bounds = [int(match.group(1))] if match else []
    if maxrec is not None:
        bounds.append(maxrec)
    return min(bounds) if bounds else None


def choose_mode(
    mode: Mode, query: str, maxrec: int | None, sync_row_limit: int
) -> Literal["sync", "async"]:
    """``"sync"`` or ``"async"``. Auto is sync only when :func:`expected_rows` <= the limit."""
    if mode != "auto":
        return mode
    rows = expected_rows(query, maxrec)
    return "sync" if rows is not None and rows <= sync_row_limit else "async"


def table_of(query: str) -> str | None:
    """The first table named after FROM (``gaiadr3.gaia_source``), for keys and provenance."""
    match = _FROM.search(query)
    return match.group(1).replace('"', "") if match else None


def result_key(query: str, fmt: Format, maxrec: int | None = None) -> str:
    """``<table slug>-<12 hex>.<ext>``: stable for the same query, format and maxrec."""
    text = f"{query.strip()}\n{fmt}" + (f"\nMAXREC={maxrec}" if maxrec is not None else "")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9._]+", "-", (table_of(query) or "query").lower()).strip("-.")
    return f"{slug or 'query'}-{digest}{EXTENSIONS[fmt]}"


def sync_url(service: TapService, query: str, fmt: Format, maxrec: int | None = None) -> str:
    """The GET URL of a sync query."""
    return str(httpx.URL(service.sync_url, params=service.params(query, fmt, maxrec)))


def _provenance(
    service: TapService,
    endpoint: str,
    mode: str,
    query: str,
    fmt: Format,
    maxrec: int | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    provenance: dict[str, Any] = {
        "provider": service.provider,
        "endpoint": endpoint,
        "mode": mode,
        "table": table_of(query),
        "query": query,
        "format": fmt,
    }
    if maxrec is not None:
        provenance["maxrec"] = maxrec
    return provenance | dict(extra or {})


def sync_asset(
    ctx: PlanContext,
    service: TapService,
    query: str,
    fmt: Format,
    maxrec: int | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Asset:
    """The sync query as an asset: its URL is the query, its body the result table."""
    return Asset(
        url=sync_url(service, query, fmt, maxrec),
        key=result_key(query, fmt, maxrec),
        media_type=MEDIA_TYPES[fmt],
        headers=dict(service.headers),
        auth=service.auth,
        provenance=_provenance(service, service.sync_url, "sync", query, fmt, maxrec, provenance),
        opener=result_opener(ctx, fmt, service.provider),
    )


# -- UWS job documents ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UwsResult:
    """One ``uws:result``; ``encoding``, ``size`` and ``rows`` are Gaia extensions."""

    id: str
    href: str | None = None
    mime: str | None = None
    encoding: str | None = None
    size: int | None = None
    rows: int | None = None


@dataclass(frozen=True, slots=True)
class UwsJob:
    """What a ``uws:job`` document says."""

    job_id: str
    phase: str
    error: str | None = None
    results: tuple[UwsResult, ...] = ()

    def result(self) -> UwsResult | None:
        """The result named ``result`` (the TAP convention), else the first one."""
        return next((r for r in self.results if r.id == "result"), None) or next(
            iter(self.results), None
        )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _attribute(element: ET.Element, name: str) -> str | None:
    return next((v for k, v in element.attrib.items() if _local(k) == name), None)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _text(element: ET.Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def parse_xml(body: bytes, what: str) -> ET.Element:
    """Parse a small XML document, refusing DOCTYPE and ENTITY declarations outright."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise FetchError(f"{what}: refused: the document declares a DOCTYPE or entities")
    try:
        return ET.fromstring(body)
    except ET.ParseError as error:
        raise FetchError(f"{what}: not well-formed XML ({error})") from None


def parse_job(body: bytes, what: str = "UWS job document") -> UwsJob:
    """Read a ``uws:job`` document (UWS 1.0 or 1.1)."""
    root = parse_xml(body, what)
    if _local(root.tag) != "job":
        raise FetchError(f"{what}: expected a uws:job document, got <{_local(root.tag)}>")
    children = {_local(child.tag): child for child in root}
    job_id = _text(children.get("jobId"))
    phase = _text(children.get("phase")).upper()
    if not job_id or not phase:
        raise FetchError(f"{what}: the job document has no jobId or phase")
    summary = children.get("errorSummary")
    error = None
    if summary is not None:
        message = next((c for c in summary if _local(c.tag) == "message"), None)
        error = _text(message) or None
    results = tuple(
        UwsResult(
            id=_attribute(r, "id") or "",
            href=_attribute(r, "href"),
            mime=_attribute(r, "mime"),
            encoding=_attribute(r, "encoding"),
            size=_int(_attribute(r, "size")),
            rows=_int(_attribute(r, "rows")),
        )
        for r in children.get("results", ET.Element("results"))
        if _local(r.tag) == "result"
    )
    return UwsJob(job_id, phase, error, results)


def error_message(body: bytes) -> str | None:
    """The text of a VOTable's ``QUERY_STATUS`` ERROR INFO, or None when there is none."""
    try:
        root = parse_xml(body, "error document")
    except FetchError:
        return None
    return status_error(root)


def status_error(root: ET.Element) -> str | None:
    """The text of the ``QUERY_STATUS`` ERROR INFO in a parsed VOTable, or None."""
    for element in root.iter():
        if (
            _local(element.tag) == "INFO"
            and element.get("name") == "QUERY_STATUS"
            and element.get("value", "").upper() == "ERROR"
        ):
            return (_text(element) or "ERROR")[:500]
    return None


# -- async jobs -------------------------------------------------------------------------------


async def submit_job(
    ctx: PlanContext, service: TapService, query: str, fmt: Format, maxrec: int | None = None
) -> tuple[str, UwsJob]:
    """Create and start a job; return its URL and its document. Its deletion is scheduled.

    The POST that creates the job is sent once: a retry after a lost answer would create a
    second job nobody deletes. Only a 429 or 503 (refused before any job exists) is sent
    again, with the run's backoff. The 303 to the job is not followed: its Location is the
    job, whose deletion is scheduled before anything else can fail; the job document is
    then read with the usual retries.
    """
    data = service.params(query, fmt, maxrec) | {"PHASE": "RUN"}
    options = service.request_options()
    try:
        response = await _post_job(ctx, service, data, options)
    except HTTPStatusError as error:
        said = error_message(error.body)
        raise FetchError(
            f"{service.provider}: job submission refused (HTTP {error.status_code}) at "
            f"{service.async_url}: " + (said or "check the ADQL query and the format")
        ) from None
    except RetryableError as error:
        raise FetchError(
            f"{service.provider}: job submission at {service.async_url} failed: {error}"
        ) from None
    job = _job_or_none(response)
    job_url = _job_url(service, response, job)
    ctx.on_finish(lambda: delete_job(ctx, service, job_url))
    if job is None:
        job = await fetch_job(ctx, service, job_url)
    if job.phase == PENDING:
        # Some services create the job without running it, whatever PHASE said.
        response = await ctx.request("POST", f"{job_url}/phase", data={"PHASE": "RUN"}, **options)
        job = _job_or_none(response) or await fetch_job(ctx, service, job_url)
    ctx.log.info("%s: job %s submitted (%s)", service.provider, job.job_id, job.phase)
    return job_url, job


async def _post_job(
    ctx: PlanContext, service: TapService, data: dict[str, str], options: dict[str, Any]
) -> httpx.Response:
    """``POST <async>`` once, again only after a 429/503 (no job was created then)."""
    policy = ctx.client.retry
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.retries + 1),
        wait=policy.wait,
        retry=tenacity.retry_if_exception(_refused_before_creation),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await ctx.request(
                "POST",
                service.async_url,
                data=data,
                retry=False,
                follow_redirects=False,
                **options,
            )
    raise AssertionError("unreachable: tenacity reraises the last error")


def _refused_before_creation(error: BaseException) -> bool:
    return isinstance(error, RetryableError) and error.status_code in SUBMIT_RETRY_STATUSES


def _job_or_none(response: httpx.Response) -> UwsJob | None:
    try:
        return parse_job(response.content)
    except FetchError:
        return None


def _job_url(service: TapService, response: httpx.Response, job: UwsJob | None) -> str:
    if location := response.headers.get("Location"):  # 201 Created, or the 303 not followed
        return urljoin(str(response.url), str(location))
    if job is not None:  # a 200 with the job document at the job list's URL
        return f"{service.async_url}/{job.job_id}"
    raise FetchError(
        f"{service.provider}: job submission at {service.async_url} answered "
        f"HTTP {response.status_code} with neither a redirect to the job nor a job document"
    )


async def fetch_job(ctx: PlanContext, service: TapService, job_url: str) -> UwsJob:
    response = await ctx.request("GET", job_url, **service.request_options())
    return parse_job(response.content, f"{service.provider}: job {job_url}")


async def fetch_phase(ctx: PlanContext, service: TapService, job_url: str) -> str:
    """``GET <job>/phase``; falls back to the job document if the answer is not a phase."""
    try:
        response = await ctx.request("GET", f"{job_url}/phase", **service.request_options())
    except HTTPStatusError as error:
        if error.status_code not in (404, 405):
            raise
        return (await fetch_job(ctx, service, job_url)).phase  # a service without /phase
    phase = response.text.strip().upper()
    if _PHASE_WORD.fullmatch(phase):
        return phase
    return (await fetch_job(ctx, service, job_url)).phase


async def delete_job(ctx: PlanContext, service: TapService, job_url: str) -> None:
    # UWS answers 303 to the job list: not followed, that list can be every job of the user.
    await ctx.request("DELETE", job_url, follow_redirects=False, **service.request_options())
    ctx.log.info("%s: job %s deleted", service.provider, job_url)


async def wait_for_job(
    ctx: PlanContext, service: TapService, job_url: str, job: UwsJob, polling: Polling
) -> UwsJob:
    """Poll until the job is COMPLETED and return its document; raise on anything else."""
    deadline = _clock() + polling.timeout
    delay = polling.interval
    phase = job.phase
    while phase not in FINAL_PHASES:
        remaining = deadline - _clock()
        if remaining <= 0:
            raise FetchError(
                f"{service.provider}: job {job.job_id} still {phase} after "
                f"{polling.timeout:g} s (job_timeout): raise job_timeout or narrow the query"
            )
        await _sleep(min(delay, remaining))
        delay = min(delay * 2, polling.max_interval)
        phase = await fetch_phase(ctx, service, job_url)
        ctx.log.debug("%s: job %s is %s", service.provider, job.job_id, phase)
    if phase != job.phase:
        job = await fetch_job(ctx, service, job_url)
    if job.phase == ERROR:
        detail = job.error or await _error_detail(ctx, service, job_url)
        raise FetchError(
            f"{service.provider}: job {job.job_id} failed (phase ERROR): "
            f"{detail or 'the service gave no error summary'}"
        )
    if job.phase != COMPLETED:
        raise FetchError(
            f"{service.provider}: job {job.job_id} ended {job.phase} without results; "
            "submit the query again"
        )
    return job


async def _error_detail(ctx: PlanContext, service: TapService, job_url: str) -> str | None:
    """``<job>/error`` (an error VOTable or text), for services whose summary is empty."""
    try:
        response = await ctx.request("GET", f"{job_url}/error", **service.request_options())
    except FetchError:
        return None
    body = response.content[:_ERROR_DOC_CAP]
    return error_message(body) or (" ".join(body.decode("utf-8", "replace").split())[:500] or None)


async def async_asset(
    ctx: PlanContext,
    service: TapService,
    query: str,
    fmt: Format,
    maxrec: int | None = None,
    polling: Polling | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Asset:
    """Run the query as a UWS job and return its result as an asset (the job is deleted later)."""
    job_url, job = await submit_job(ctx, service, query, fmt, maxrec)
    job = await wait_for_job(ctx, service, job_url, job, polling or Polling())
    result = job.result()
    details: dict[str, Any] = {"job_id": job.job_id}
    if result is not None and result.rows is not None:
        details["rows"] = result.rows
    return Asset(
        url=f"{job_url}/results/result",
        key=result_key(query, fmt, maxrec),
        # A published size is of the bytes as served: it says nothing once they are inflated.
        size=result.size if result is not None and not result.encoding else None,
        media_type=MEDIA_TYPES[fmt],
        headers=dict(service.headers),
        auth=service.auth,
        provenance=_provenance(
            service,
            service.async_url,
            "async",
            query,
            fmt,
            maxrec,
            {**details, **(provenance or {})},
        ),
        opener=result_opener(ctx, fmt, service.provider),
    )


async def plan_query(
    ctx: PlanContext,
    service: TapService,
    query: str,
    fmt: Format,
    mode: Mode = "auto",
    maxrec: int | None = None,
    polling: Polling | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> AsyncIterator[Asset]:
    """The query's one asset, sync or async per :func:`choose_mode`.

    Under ``--dry-run`` an async query is only logged: no job is submitted, nothing yielded.
    """
    chosen = choose_mode(mode, query, maxrec, service.sync_row_limit)
    if chosen == "sync":
        yield sync_asset(ctx, service, query, fmt, maxrec, provenance)
        return
    if ctx.dry_run:
        ctx.log.info(
            "dry run: would submit an async job to %s: %s",
            service.async_url,
            " ".join(query.split()),
        )
        return
    yield await async_asset(ctx, service, query, fmt, maxrec, polling, provenance)


# -- result bodies ----------------------------------------------------------------------------


def result_opener(ctx: PlanContext, fmt: Format, provider: str = "TAP") -> Opener:
    """The engine's conditional GET, with gzip bodies inflated and error documents refused."""
    client, limiter = ctx.client, ctx.limiter

    @asynccontextmanager
    async def open_result(asset: Asset, conditions: Conditions) -> AsyncIterator[Download]:
        async with AsyncExitStack() as stack:
            try:
                download = await stack.enter_async_context(
                    client.open_asset(asset, conditions, limiter)
                )
            except FetchError as error:
                _explain(error, provider)
                raise
            if download.chunks is not None:
                download.chunks = _result_body(download.chunks, fmt, provider)
            yield download

    return open_result


def _explain(error: FetchError, provider: str) -> None:
    """Add the TAP error document's message to an HTTP error's (its type, so retries, kept)."""
    said = error_message(getattr(error, "body", b""))  # HTTP errors carry their body
    if said:
        error.args = (f"{error}: {provider} says: {said}", *error.args[1:])


async def _result_body(
    chunks: AsyncIterator[bytes], fmt: Format, provider: str
) -> AsyncIterator[bytes]:
    head, rest = await _head(chunks, len(_GZIP_MAGIC))
    body = _chain(head, rest)
    if head.startswith(_GZIP_MAGIC):
        body = _gunzip(body)
    if fmt != "votable":
        body = _refuse_error_document(body, fmt, provider)
    async for chunk in body:
        yield chunk


async def _head(chunks: AsyncIterator[bytes], size: int) -> tuple[bytes, AsyncIterator[bytes]]:
    """At least ``size`` bytes from the front (fewer at the end), and the rest of the stream."""
    iterator = aiter(chunks)
    head = b""
    while len(head) < size:
        try:
            head += await anext(iterator)
        except StopAsyncIteration:
            break
    return head, iterator


async def _chain(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk


async def _gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Inflate a gzip stream (several members allowed) in bounded steps."""
    inflater = _Inflater()
    async for chunk in chunks:
        for out in inflater.feed(chunk):
            yield out
    if not inflater.done:
        raise RetryableError("gzip-encoded TAP result ends early (truncated)")


class _Inflater:
    """gzip members one after another, never more than ``_OUT_CAP`` bytes out per step."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)

    @property
    def done(self) -> bool:
        return self._z.eof

    def feed(self, data: bytes) -> Iterator[bytes]:
        held_back = False
        while data or held_back:
            if self._z.eof:  # another member follows (NUL padding allowed, as gzip(1) does)
                data = data.lstrip(b"\0")
                if not data:
                    return
                self._z = zlib.decompressobj(wbits=31)
            try:
                out = self._z.decompress(data, _OUT_CAP)
            except zlib.error as error:
                raise FetchError(f"gzip-encoded TAP result is corrupt: {error}") from None
            # At the cap zlib may have taken all the input yet still hold output back.
            held_back = len(out) == _OUT_CAP and not self._z.eof
            if out:
                yield out
            data = self._z.unused_data if self._z.eof else self._z.unconsumed_tail


async def _refuse_error_document(
    chunks: AsyncIterator[bytes], fmt: Format, provider: str
) -> AsyncIterator[bytes]:
    """Pass a CSV/JSON body through, unless it is XML: then it is a TAP error document."""
    iterator = aiter(chunks)
    head = b""
    async for chunk in iterator:
        head += chunk
        if head.strip() or len(head) > 4096:
            break
    if not head.lstrip().startswith(b"<"):
        async for chunk in _chain(head, iterator):
            yield chunk
        return
    async for chunk in iterator:
        if len(head) >= _ERROR_DOC_CAP:
            break
        head += chunk
    message = error_message(head[:_ERROR_DOC_CAP])
    raise FetchError(
        f"{provider}: the service answered with an XML error document instead of {fmt}: "
        f"{message or 'no QUERY_STATUS message'}"
    )


# -- the generic source type ------------------------------------------------------------------


class TapQueryConfig(SourceConfig):
    """Keys shared by every TAP-based source type (tap, nasa.exoplanet_archive, esa.gaia…)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    query: str = Field(min_length=1)
    """The ADQL query, e.g. ``"select top 100 pl_name, pl_eqt from pscomppars"``."""
    format: Format = "votable"
    """Result format: ``"csv"``, ``"votable"`` or ``"json"`` (stored as .csv, .vot, .json)."""
    mode: Mode = "auto"
    """``"sync"``, ``"async"`` (UWS job), or ``"auto"``: sync when ``TOP n`` or ``maxrec`` bounds
    the result to ``sync_row_limit`` rows or fewer, async otherwise."""
    maxrec: int | None = Field(default=None, ge=0)
    """TAP ``MAXREC``: the most rows to return. A result cut short says OVERFLOW and is
    quarantined under the default ``min_quality`` (set ``min_quality = 0.85`` to keep it)."""
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    """Seconds before the first poll of an async job; doubles after each poll."""
    poll_max: float = Field(default=30.0, gt=0, le=3600)
    """The longest pause, in seconds, between two polls of an async job."""
    job_timeout: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    """Seconds to wait for an async job to finish before giving up (the job is deleted)."""

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be an ADQL query, not blank")
        return value.strip()

    def polling(self) -> Polling:
        return Polling(self.poll_interval, max(self.poll_max, self.poll_interval), self.job_timeout)


class TapConfig(TapQueryConfig):
    """``plugin = "tap"``: one ADQL query against any IVOA TAP service."""

    url: str | None = None
    """The TAP service root, e.g. ``"https://archive.eso.org/tap_obs"`` (sync and async live
    under it). ``base_url`` may be given instead, and takes its place if both are."""
    sync_row_limit: int = Field(default=DEFAULT_SYNC_ROW_LIMIT, ge=1)
    """``mode = "auto"`` runs a query sync when it returns at most this many rows."""
    headers: dict[str, str] = {}
    """Sent with every request, e.g. ``{ Authorization = "Bearer ${TAP_TOKEN}" }``."""
    provider: str = "TAP"
    """The service's name in messages and provenance."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @model_validator(mode="after")
    def _has_service(self) -> TapConfig:
        if self.url is None and self.base_url is None:
            raise ValueError('give url = "<the TAP service root>"')
        return self

    @property
    def service_url(self) -> str:
        url = self.base_url or self.url
        assert url is not None  # _has_service
        return url


async def plan(config: TapConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    service = TapService(
        base=config.service_url,
        provider=config.provider,
        sync_row_limit=config.sync_row_limit,
        headers=config.headers,
    )
    async for asset in plan_query(
        ctx, service, config.query, config.format, config.mode, config.maxrec, config.polling()
    ):
        yield asset


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [SourceType("tap", TapConfig, plan, "an ADQL query against any IVOA TAP service")]
