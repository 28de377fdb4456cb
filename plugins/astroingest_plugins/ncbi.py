"""``plugin = "ncbi.eutils"``: an Entrez search, fetched in batches from NCBI's history server.

One ``esearch`` with ``usehistory=y`` leaves the result set on NCBI's history server
(``WebEnv`` + ``query_key``); every ``batch_size`` records of it then become one asset,
the ``efetch`` (or ``esummary``) URL for that ``retstart``/``retmax``. The engine
downloads, validates and lands each batch like any other file.

NCBI's usage policy: ``tool`` and ``email`` go with every request, at most 3 requests/s
without an API key and 10/s with one (see https://www.ncbi.nlm.nih.gov/books/NBK25497/).
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit
from weakref import WeakKeyDictionary
from xml.parsers import expat

import httpx
from pydantic import Field, field_validator, model_validator

from astroingest import (
    Asset,
    Conditions,
    Download,
    FetchError,
    HostLimit,
    HTTPStatusError,
    PlanContext,
    PoliteClient,
    RetryableError,
    SourceConfig,
    SourceType,
    hookimpl,
)
from astroingest._hosts import HostBudgets, RateLimiter
from astroingest.doctor import CheckResult, DoctorCheck, DoctorContext
from astroingest_plugins.hosts import PUBLISHED_LIMITS

DEFAULT_BASE_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils"
NCBI_HOST = "eutils.ncbi.nlm.nih.gov"
KEYLESS = next(limit for limit in PUBLISHED_LIMITS if limit.host == NCBI_HOST)
KEYED_CONNECTIONS, KEYED_RATE = 10, 10.0
KEYLESS_RATE = KEYLESS.rate or 3.0
_LIMITERS: WeakKeyDictionary[HostBudgets, dict[tuple[str, str | None], RateLimiter]] = (
    WeakKeyDictionary()
)
"""Per run (its host budgets): one limiter per host and API key (None: keyless)."""
PUBMED_MAX_RECORDS = 9999
"""PubMed's E-utilities refuse ``retstart`` above 9998, so only this many records are reachable."""
ESUMMARY_JSON_MAX = 500
"""esummary answers "Too many UIDs in request" above 500 UIDs with retmode=json."""
CITATION = (
    "Entrez Programming Utilities Help. Bethesda (MD): National Center for Biotechnology "
    "Information (US); 2010-. https://www.ncbi.nlm.nih.gov/books/NBK25501/"
)
DOCUMENTATION = "https://www.ncbi.nlm.nih.gov/books/NBK25499/"

_FASTA_TYPES = frozenset({"fasta", "fasta_cds_na", "fasta_cds_aa"})
_GENBANK_TYPES = frozenset({"gb", "gbwithparts", "gp"})
_DATE = r"^\d{4}(/\d{1,2}(/\d{1,2})?)?$"
_HEAD_BYTES = 2048
_BODY_ERROR = re.compile(
    rb"<(?:eFetchResult|eSummaryResult)>\s*<ERROR>(.*?)</ERROR>", re.DOTALL | re.IGNORECASE
)
_JSON_ERROR = re.compile(
    rb'^\s*\{\s*(?:"header"\s*:\s*\{[^{}]*\}\s*,\s*)?"error"\s*:\s*"((?:[^"\\]|\\.)*)"',
    re.DOTALL,
)
"""A top-level ``"error"`` in the head of a JSON answer (after the ``header``, if any)."""
_HISTORY_LOST = re.compile(
    r"history|unable to obtain query|webenv|query[ _]?key|expired", re.IGNORECASE
)
"""NCBI's messages for a result set gone from the history server: only a new search helps."""


class EutilsConfig(SourceConfig):
    """An Entrez search and how to fetch its records."""

    db: str = Field(
        pattern=r"^[a-z0-9_]+$",
        description='Entrez database: "pubmed", "protein", "nuccore", "gene", "medgen"...',
    )
    term: str = Field(
        min_length=1,
        description='Entrez query, as typed in the web search box: "OCRL[gene] AND human[orgn]".',
    )
    method: Literal["efetch", "esummary"] = Field(
        default="efetch",
        description="efetch for full records, esummary for document summaries.",
    )
    rettype: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.]+$",
        description='efetch record type ("fasta", "gb", "gbwithparts", "gp", "abstract", '
        '"medline"...); unset: the database\'s default. Not used by esummary.',
    )
    retmode: Literal["xml", "text", "json", "asn.1"] = Field(
        default="xml",
        description='Format: "xml", "text" (FASTA/GenBank flat files...), "json" or "asn.1".',
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=10000,
        description="Records per request (retmax); each batch is one stored file. "
        "NCBI allows up to 10000 (500 for esummary with retmode json).",
    )
    max_records: int | None = Field(
        default=None, ge=1, description="Fetch at most this many records of the search."
    )
    sort: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_ .+-]+$",
        description='Order of the result set ("pub_date", "relevance"...); batches follow it.',
    )
    datetype: str | None = Field(
        default=None,
        pattern=r"^[a-z]+$",
        description='Date the filters apply to: "pdat" (publication), "edat" (Entrez), "mdat"...',
    )
    mindate: str | None = Field(
        default=None, pattern=_DATE, description='Start of a date range, "YYYY[/MM[/DD]]".'
    )
    maxdate: str | None = Field(
        default=None, pattern=_DATE, description='End of a date range, "YYYY[/MM[/DD]]".'
    )
    reldate: int | None = Field(
        default=None, ge=1, description="Only records dated within the last N days."
    )
    api_key: str | None = Field(
        default=None,
        description='NCBI API key, as "${NCBI_API_KEY}"; raises the budget from 3 to 10 '
        "requests/s.",
    )
    email: str | None = Field(
        default=None,
        validate_default=True,
        description="Your contact address, required by NCBI's usage policy and sent with every "
        'request; "${NCBI_EMAIL}" keeps it out of run reports.',
    )
    tool: str = Field(
        default="astroingest",
        pattern=r"^\S+$",
        description="Application name sent with every request (no spaces).",
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str:
        if value is None:
            raise ValueError(
                "required by NCBI's usage policy (they contact you before blocking): "
                'email = "you@example.org" or "${NCBI_EMAIL}"'
            )
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EutilsConfig:
        if (self.mindate is None) != (self.maxdate is None):
            raise ValueError("give mindate and maxdate together (NCBI ignores one alone)")
        if self.method == "esummary":
            if self.rettype is not None:
                raise ValueError("esummary takes no rettype (it is an efetch option)")
            if self.retmode not in ("xml", "json"):
                raise ValueError('esummary answers retmode "xml" or "json" only')
            if self.retmode == "json" and self.batch_size > ESUMMARY_JSON_MAX:
                raise ValueError(
                    f"esummary with retmode json takes at most {ESUMMARY_JSON_MAX} records "
                    "per request: lower batch_size"
                )
        return self

    @property
    def filters(self) -> dict[str, str | int]:
        """The date filters that are set, as esearch parameters."""
        values = {
            "datetype": self.datetype,
            "mindate": self.mindate,
            "maxdate": self.maxdate,
            "reldate": self.reldate,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Search:
    """What esearch said about the term."""

    count: int
    query_key: str | None
    webenv: str | None
    translation: str | None = None
    problems: tuple[str, ...] = ()
    """ErrorList/WarningList entries: parts of the term NCBI could not use."""


async def plan(config: EutilsConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
    _claim_budget(base, config, ctx)
    search = await esearch(base, config, ctx)
    total = _reachable(search, config, ctx)
    if total == 0:
        return
    batches = range(0, total, config.batch_size)
    ctx.log.info(
        "%s: %d of %d records of %s in %d batches of up to %d",
        config.method,
        total,
        search.count,
        config.db,
        len(batches),
        config.batch_size,
    )
    if ctx.dry_run:
        ctx.log.info("dry run: listing the batches, fetching none")
    for start in batches:
        yield batch_asset(base, config, search, start, min(config.batch_size, total - start), ctx)


def _claim_budget(base: str, config: EutilsConfig, ctx: PlanContext) -> None:
    """NCBI's published rates for whichever host serves the E-utilities this run.

    NCBI counts requests per API key (10/s) and, without one, per address (3/s). The host
    budget is shared by every source on the host, so it cannot tell them apart: a keyed
    source lifts the host's rate cap (keeping 10 connections) and the rates are kept by
    limiters shared by every source of this run with the same key, or with none. A keyless
    source therefore stays at 3 requests/s however fast a keyed one goes, and two keyless
    sources share those 3. A mirror or a test server gets the same budgets as NCBI, so the
    politeness does not depend on the URL; a ``[hosts]`` entry the user wrote for the host
    wins over all of it, as everywhere.
    """
    host = (urlsplit(base).hostname or NCBI_HOST).lower()
    budgets = ctx.client.budgets
    if host in budgets.user_hosts:
        return
    if config.api_key:
        ctx.host_limit(HostLimit(host, connections=KEYED_CONNECTIONS, rate=None))
    elif host not in budgets.limits:
        ctx.host_limit(HostLimit(host, connections=KEYLESS.connections, rate=KEYLESS.rate))
    run_limiters = _LIMITERS.setdefault(budgets, {})
    identity = (host, config.api_key)
    shared = run_limiters.get(identity)
    if shared is None:
        rate = KEYED_RATE if config.api_key else KEYLESS_RATE
        shared = run_limiters[identity] = RateLimiter(rate)
    ctx.limiter = shared if ctx.limiter is None else _Both(ctx.limiter, shared)


class _Both(RateLimiter):
    """The source's own ``rate`` and NCBI's shared one, both kept."""

    def __init__(self, *limiters: RateLimiter) -> None:
        self.limiters = limiters
        self.interval = max(limiter.interval for limiter in limiters)

    async def acquire(self) -> None:
        for limiter in self.limiters:
            await limiter.acquire()


def _identity(config: EutilsConfig) -> dict[str, str]:
    """What NCBI wants on every request: who is asking, and the key when there is one."""
    assert config.email is not None  # the validator guarantees it
    params = {"tool": config.tool, "email": config.email}
    if config.api_key:
        params["api_key"] = config.api_key
    return params


async def esearch(base: str, config: EutilsConfig, ctx: PlanContext) -> Search:
    """Run the search on the history server; raise FetchError for NCBI's logical errors."""
    form: dict[str, str | int] = {
        "db": config.db,
        "term": config.term,
        "usehistory": "y",
        "retmax": 0,  # the ids come from the history server, batch by batch
        "retmode": "xml",
        **config.filters,
    }
    if config.sort:
        form["sort"] = config.sort
    form.update(_identity(config))
    url = f"{base}/esearch.fcgi"
    try:
        # POST: a long term fits, and the key stays out of any URL that gets logged.
        response = await ctx.request("POST", url, data=form)
    except HTTPStatusError as error:
        hint = " (check api_key)" if config.api_key and error.status_code in (400, 401, 403) else ""
        raise FetchError(f"NCBI esearch on {config.db}: {error}{hint}") from None
    search = parse_esearch(response.content, config.db)
    _log_search(search, config, ctx)
    return search


def parse_esearch(body: bytes, db: str) -> Search:
    root = parse_xml(body, "esearch")
    if root.tag != "eSearchResult":
        raise FetchError(f"NCBI esearch on {db}: expected eSearchResult, got <{root.tag}>")
    error = root.findtext("ERROR")
    if error is not None:
        raise FetchError(f"NCBI esearch on {db} failed: {error.strip() or 'unspecified error'}")
    count_text = (root.findtext("Count") or "").strip()
    if not count_text.isdigit():
        raise FetchError(f"NCBI esearch on {db}: no result Count in the response")
    # OutputMessage only restates the count ("No items found."); the rest name the parts
    # of the term NCBI dropped: PhraseNotFound, FieldNotFound, PhraseIgnored...
    problems = tuple(
        f"{_words(child.tag)}: {(child.text or '').strip()}"
        for child in [*root.findall("ErrorList/*"), *root.findall("WarningList/*")]
        if child.tag != "OutputMessage" and (child.text or "").strip()
    )
    return Search(
        count=int(count_text),
        query_key=_text(root, "QueryKey"),
        webenv=_text(root, "WebEnv"),
        translation=_text(root, "QueryTranslation"),
        problems=problems,
    )


def _words(tag: str) -> str:
    """``PhraseNotFound`` -> ``phrase not found``."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", tag).lower()


def _text(root: ET.Element, tag: str) -> str | None:
    value = (root.findtext(tag) or "").strip()
    return value or None


def _log_search(search: Search, config: EutilsConfig, ctx: PlanContext) -> None:
    term = _short(config.term)
    problems = "; ".join(search.problems)
    if search.count == 0:
        if problems:
            ctx.log.warning("no results for term %r in %s (%s)", term, config.db, problems)
        else:
            ctx.log.info("no results for term %r in %s", term, config.db)
    elif problems:
        # NCBI dropped part of the term and searched with the rest: the user should know.
        ctx.log.warning("NCBI ignored part of term %r in %s: %s", term, config.db, problems)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reachable(search: Search, config: EutilsConfig, ctx: PlanContext) -> int:
    """How many records to fetch: the count, within max_records and PubMed's ceiling."""
    total = search.count
    if config.max_records is not None:
        total = min(total, config.max_records)
    if config.db == "pubmed" and total > PUBMED_MAX_RECORDS:
        ctx.log.warning(
            "PubMed serves only the first %d of the %d records of a search through the "
            "E-utilities; split the search with mindate/maxdate to get the rest",
            PUBMED_MAX_RECORDS,
            search.count,
        )
        total = PUBMED_MAX_RECORDS
    if total and not (search.webenv and search.query_key):
        raise FetchError(
            f"NCBI esearch on {config.db} found {search.count} records but returned no "
            "WebEnv/QueryKey (history server unavailable?): try again later"
        )
    return total


def batch_asset(
    base: str, config: EutilsConfig, search: Search, start: int, size: int, ctx: PlanContext
) -> Asset:
    """One efetch/esummary request of ``size`` records from ``start`` of the result set."""
    assert search.webenv is not None and search.query_key is not None
    params: dict[str, str | int] = {
        "db": config.db,
        "query_key": search.query_key,
        "WebEnv": search.webenv,
        "retstart": start,
        "retmax": size,
    }
    if config.rettype:
        params["rettype"] = config.rettype
    params["retmode"] = config.retmode
    params.update(_identity(config))
    endpoint = f"{base}/{config.method}.fcgi"
    extension, media_type = output_format(config)
    return Asset(
        url=f"{endpoint}?{urlencode(params)}",
        # The full batch range, not the records it holds now: when the count grows, the
        # last batch keeps its key (and is fetched again) instead of landing beside it.
        key=f"{query_prefix(config)}/{start:08d}-{start + config.batch_size - 1:08d}.{extension}",
        media_type=media_type,
        provenance=_provenance(endpoint, config, search, start, size),
        opener=partial(open_checked, ctx.client, ctx.limiter),
    )


def query_prefix(config: EutilsConfig) -> str:
    """``<db>-<digest of the query>``: the same search lands under the same prefix every run.

    The WebEnv changes with every esearch, so it stays out; the batch range is in the name
    and batch_size in the digest, so batches of another size never overlap these.
    """
    query = {
        "db": config.db,
        "term": config.term,
        "method": config.method,
        "rettype": config.rettype,
        "retmode": config.retmode,
        "sort": config.sort,
        "batch_size": config.batch_size,
        **config.filters,
    }
    digest = hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.db}-{digest}"


def output_format(config: EutilsConfig) -> tuple[str, str]:
    """The key's extension (it picks the validator) and the media type of a batch."""
    if config.retmode == "xml":
        return "xml", "text/xml"
    if config.retmode == "json":
        return "json", "application/json"
    if config.retmode == "asn.1":
        return "asn1", "text/plain"
    if config.rettype in _FASTA_TYPES:
        return "fasta", "text/plain"
    if config.rettype in _GENBANK_TYPES:
        return "gb", "text/plain"
    return "txt", "text/plain"


def _provenance(
    endpoint: str, config: EutilsConfig, search: Search, start: int, size: int
) -> dict[str, Any]:
    provenance: dict[str, Any] = {
        "provider": "NCBI E-utilities",
        "endpoint": endpoint,
        "db": config.db,
        "term": config.term,
        "query_translation": search.translation,
        "filters": config.filters,
        "sort": config.sort,
        "rettype": config.rettype,
        "retmode": config.retmode,
        "count": search.count,
        "query_key": search.query_key,
        "retstart": start,
        "retmax": size,
        "records": [start + 1, start + size],
        "tool": config.tool,
        "citation": CITATION,
        "documentation": DOCUMENTATION,
    }
    return {k: v for k, v in provenance.items() if v not in (None, {})}


@asynccontextmanager
async def open_checked(
    client: PoliteClient, limiter: RateLimiter | None, asset: Asset, conditions: Conditions
) -> AsyncIterator[Download]:
    """The engine's GET, refusing NCBI's error documents that come with status 200.

    An expired WebEnv or a failing backend gives ``<eFetchResult><ERROR>…`` (or, with
    retmode json, ``{"header": …, "error": …}``) as a well-formed body, which no validator
    could tell from data; only the head is looked at, so the body still streams.
    """
    async with client.open_asset(asset, conditions, limiter=limiter) as download:
        if download.chunks is None:
            yield download
            return
        head, chunks = await _peek(download.chunks, _HEAD_BYTES)
        message = body_error(head)
        if message is not None:
            raise error_for(message)
        yield replace(download, chunks=chunks)


def body_error(head: bytes) -> str | None:
    """NCBI's error message in the head of a 200 answer, or None when it holds data."""
    match = _BODY_ERROR.search(head)
    if match:
        return match.group(1).decode("utf-8", "replace").strip() or "unspecified error"
    if not head.lstrip().startswith(b"{"):
        return None
    match = _JSON_ERROR.match(head)
    if match:
        try:
            text = json.loads(b'"' + match.group(1) + b'"')
        except ValueError:
            text = match.group(1).decode("utf-8", "replace")
        return str(text).strip() or "unspecified error"
    try:
        document = json.loads(head)  # the whole body, when it fits in the head
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    # {"header": …, "esummaryresult": ["Invalid uid …"]}: messages and no result.
    messages = document.get("esummaryresult")
    if (
        "result" not in document
        and isinstance(messages, list)
        and messages
        and all(isinstance(m, str) for m in messages)
    ):
        return "; ".join(m.strip() for m in messages)
    return None


def error_for(message: str) -> FetchError:
    """Permanent when the result set is gone from the history server, else transient."""
    if _HISTORY_LOST.search(message):
        return FetchError(
            f"NCBI answered with an error instead of records: {message} (the search is no "
            "longer on NCBI's history server: run the source again for a new search)"
        )
    return RetryableError(f"NCBI answered with an error instead of records: {message}")


async def _peek(chunks: AsyncIterator[bytes], size: int) -> tuple[bytes, AsyncIterator[bytes]]:
    """The first ``size`` bytes (or fewer at the end), and all the chunks again."""
    seen: list[bytes] = []
    total = 0
    async for chunk in chunks:
        seen.append(chunk)
        total += len(chunk)
        if total >= size:
            break

    async def again() -> AsyncIterator[bytes]:
        for chunk in seen:
            yield chunk
        async for chunk in chunks:
            yield chunk

    return b"".join(seen)[:size], again()


class _UnsafeXML(Exception):
    pass


def parse_xml(body: bytes, what: str) -> ET.Element:
    """Parse an E-utilities XML answer without expanding entities or fetching DTDs.

    NCBI's documents open with a DOCTYPE naming an external DTD; expat never fetches it.
    A document with an internal subset (where entity bombs live) is refused outright.
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_internal_subset
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(body, True)
        return builder.close()
    except _UnsafeXML:
        raise FetchError(f"NCBI {what}: refused a response that declares XML entities") from None
    except (expat.ExpatError, AssertionError) as error:
        # AssertionError: TreeBuilder.close() on a body with no element at all.
        detail = str(error) or "no root element"
        raise FetchError(f"NCBI {what}: the response is not well-formed XML ({detail})") from None


def _refuse_internal_subset(
    name: str, system_id: str | None, public_id: str | None, has_internal_subset: int
) -> None:
    if has_internal_subset:
        raise _UnsafeXML


def _refuse(*_: object) -> int:
    raise _UnsafeXML


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [
        SourceType(
            "ncbi.eutils",
            EutilsConfig,
            plan,
            "an Entrez search (esearch history) fetched in batches with efetch or esummary",
        )
    ]


async def check_api_keys(ctx: DoctorContext) -> list[CheckResult]:
    """``astroingest doctor``: each NCBI source's api_key; with --online, does NCBI take it."""
    results = []
    asked: dict[tuple[str, str], CheckResult] = {}  # one request per key and host
    for source in ctx.sources("ncbi.eutils"):
        config = source.config
        assert isinstance(config, EutilsConfig)
        if not config.api_key:
            result = CheckResult.passed("no api_key: 3 requests/s (10 with a key)")
        elif not ctx.online:
            result = CheckResult.passed("api_key set (--online asks NCBI whether it takes it)")
        else:
            base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
            if (base, config.api_key) not in asked:
                asked[base, config.api_key] = await _key_accepted(ctx, base, config)
            result = asked[base, config.api_key]
        results.append(replace(result, subject=source.name))
    return results


async def _key_accepted(ctx: DoctorContext, base: str, config: EutilsConfig) -> CheckResult:
    """One esearch that returns no ids: NCBI answers 400 "API key invalid" for a bad key."""
    form = {"db": config.db, "term": config.term, "retmax": "0", **_identity(config)}
    try:
        response = await ctx.client.post(f"{base}/esearch.fcgi", data=form)
    except httpx.HTTPError as error:
        return CheckResult.failed(
            f"NCBI did not answer ({type(error).__name__})", "check the network and base_url"
        )
    if response.status_code == 200:
        return CheckResult.passed("api_key accepted by NCBI")
    reason = _error_field(response.content)  # the body repeats the key: only this field
    if response.status_code in (400, 401, 403) and "api key" in reason.lower():
        return CheckResult.failed(
            f"NCBI refused the api_key ({reason})",
            "set a current key (NCBI account settings, API Key Management)",
        )
    detail = f"NCBI answered HTTP {response.status_code}" + (f" ({reason})" if reason else "")
    return CheckResult.failed(detail, "try again later; if it persists, check base_url")


def _error_field(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    error = document.get("error") if isinstance(document, dict) else None
    return str(error)[:200] if isinstance(error, str) else ""


@hookimpl
def astroingest_doctor_checks() -> list[DoctorCheck]:
    return [DoctorCheck("ncbi api_key", check_api_keys, "NCBI E-utilities API keys")]


__all__ = ["EutilsConfig", "astroingest_doctor_checks", "astroingest_source_types", "plan"]
