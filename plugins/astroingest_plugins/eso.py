"""``plugin = "eso.tap"``: the ESO Science Archive's ``tap_obs`` service, and its data portal.

One ADQL query against ``https://archive.eso.org/tap_obs``: ``ivoa.ObsCore`` (reduced
products, ALMA too), ``dbo.raw`` (raw frames), ``ist.<instrument>``… ::

    [sources.sgra_raw]
    plugin = "eso.tap"
    query = "select dp_id, target, instrument from dbo.raw where target = 'SGR A'"
    download = true
    # username = "alice"                # only for proprietary data
    # password = "${ESO_PASSWORD}"

``download = false`` (the default)
    Exactly ``plugin = "tap"``: the result table is the one asset
    (:func:`astroingest_plugins.tap.plan_query` against ``base_url``, default ``tap_obs``).

``download = true``
    The query runs at plan time with ``MAXREC = max_products + 1`` (or ``maxrec`` when that is
    smaller): sync when that bounds it to 2000 rows, else as a UWS job, per ``mode``. More than
    ``max_products`` rows fail the source before anything is fetched: narrow the query or
    raise the guard. The rows are read from the result (a TABLEDATA VOTable, the service's
    default; CSV; or JSON ``{"metadata": [...], "data": [[...]]}``), and the plan yields

    * the result table itself, key ``<table>-<12 hex>.<ext>`` as for ``tap`` (the key includes
      that MAXREC). Its bytes are the very ones the products were listed from, kept from the
      plan-time request (at most ``max_products + 1`` rows), so the stored table always
      matches the products and ESO runs the query once, not twice;
    * one asset per distinct product: ``url`` is the row's ``access_url`` (unless its
      ``access_format`` says DataLink), else ``<dataportal_url>/<dp_id>``, the portal's file
      URL. The id is ``dp_id``, else the part of ``obs_publisher_did`` after ``?``, else the
      last segment of ``access_url``; a row with none of them is skipped with a warning.

Product keys
    ``products/<dp_id>.fits``, with ``:`` and any other character a store key may not hold
    turned into ``_``: ``SINFO.2013-08-27T01:05:24.328`` is stored as
    ``products/SINFO.2013-08-27T01_05_24.328.fits`` (ESO's download notes warn that colons
    become underscores on some systems too). The key is fixed before the download, from the
    id alone: an id that already ends in a file extension keeps it (``.TAR`` for APEX
    quicklooks, ``.fz`` for tile-compressed FITS), and ``.fits.Z``/``.fits.gz`` become ``.fits``.

Compressed frames
    The portal serves raw frames as the archive keeps them: ``<dp_id>.fits.Z``, unix
    ``compress`` files (astroquery's downloader expects ``.fits.Z`` and ``.fits.gz`` names and
    gunzips both after download; ESO's own download scripts list ``.fits.Z`` frames). A
    ``.fits`` product is stored uncompressed: a body starting with the ``compress`` magic
    (``1f 9d``) is LZW-decoded while it streams (pure Python, about 5 MB/s of output per core,
    in a worker thread so other transfers keep moving), a gzip body is inflated; anything else
    passes as served. The FITS validator then checks what lands, so a login page served
    instead of a frame is quarantined. ``sha256`` is that of the stored FITS.
    ``access_estsize`` is ESO's estimate in kB, so it goes to provenance, never to ``size``.

Credentials (``username``/``password``)
    Needed only for proprietary data. At plan time a token comes from ``token_url`` as ESO
    documents it (astroquery's flow: a GET with ``grant_type=password`` and the credentials in
    the query string; the ``id_token`` of the answer is the Bearer token). The password and
    the token are registered as secrets at once (``ctx.add_secret``); URLs in logs and
    reports lose ``password``/``token`` parameters anyway. The token goes only to the data
    portal's origin (``dataportal_url``'s scheme, host and port), on every hop of a download,
    never to a redirect elsewhere, nor to the TAP service. An expiring token (its JWT ``exp``,
    a minute early) or a 401 gets a fresh one once. Without credentials every request is
    anonymous, which covers all public data. A product answered 401 or 403 fails with a hint
    that it may still be proprietary and which credentials to give.

Politeness
    ESO publishes no request limits (none found in its programmatic-access pages), so the
    portal gets a conservative 4 connections at a time (:func:`astroingest_host_limits`);
    ``[hosts."dataportal.eso.org"]`` overrides it.

``--dry-run``
    A sync listing query still runs (a search, as cheap as any); products are listed as
    planned and nothing is downloaded. An async listing would submit a job, so it is only
    logged. A token is fetched when credentials are given, which checks them.

Provenance: dp_id, obs_id/ob_id, target, instrument, programme, release date, the query,
the TAP service and the table key, ESO's estimated size, and ESO's data access policy with
its acknowledgement requirement.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import dataclasses
import gzip
import io
import json
import re
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from pydantic import ConfigDict, Field, field_validator, model_validator

from astroingest import (
    Asset,
    Conditions,
    Download,
    FetchError,
    HostLimit,
    HTTPStatusError,
    Opener,
    PlanContext,
    RetryableError,
    SourceType,
    hookimpl,
)
from astroingest._sources import check_http_url
from astroingest_plugins.tap import (
    Format,
    TapQueryConfig,
    TapService,
    error_message,
    parse_xml,
    plan_query,
    status_error,
)

PROVIDER: Final = "ESO"
DEFAULT_BASE_URL: Final = "https://archive.eso.org/tap_obs"
DEFAULT_TOKEN_URL: Final = "https://www.eso.org/sso/oidc/token"
DEFAULT_DATAPORTAL_URL: Final = "https://dataportal.eso.org/dataPortal/file"
DATAPORTAL_HOST: Final = "dataportal.eso.org"
DATAPORTAL_CONNECTIONS: Final = 4
"""Not published by ESO: a conservative choice for a shared archive's download host."""
DEFAULT_MAX_PRODUCTS: Final = 1000
MAX_PRODUCTS_LIMIT: Final = 100_000
"""The most ``max_products`` may be: the listing is held in memory and parsed whole."""

TOKEN_PARAMS: Final[Mapping[str, str]] = {
    "response_type": "id_token token",
    "grant_type": "password",
    "client_id": "clientid",
    "client_secret": "clientSecret",
}
"""The fixed parameters of ESO's token request (apis.md section 4, from astroquery.eso)."""

TERMS: Final = "http://archive.eso.org/cms/eso-data-access-policy.html"
ACKNOWLEDGEMENT: Final = (
    "Publications based on observations collected at ESO telescopes must acknowledge this "
    "fact: " + TERMS + "#acknowledgement"
)
FITS_MEDIA_TYPE: Final = "application/fits"

_FITS_SUFFIXES: Final = (".fits.z", ".fits.gz", ".fits", ".fit", ".fts")
"""Ids ending like this are FITS, perhaps compressed: stored as ``<stem>.fits``, uncompressed."""
_OTHER_FILES: Final[Mapping[str, str]] = {
    ".fz": FITS_MEDIA_TYPE,  # tile-compressed FITS is FITS (SIMPLE first): stored as served
    ".tar": "application/x-tar",
    ".tgz": "application/gzip",
    ".gz": "application/gzip",
    ".zip": "application/zip",
    ".txt": "text/plain",
    ".pdf": "application/pdf",
    ".xml": "application/xml",
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
}
"""Ids already ending in these extensions keep them, bytes as served."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
_CHUNK: Final = 64 * 1024
_OUT_CAP: Final = 1024 * 1024
_THREAD_INPUT: Final = 16 * 1024
_GZIP_MAGIC: Final = b"\x1f\x8b"
_COMPRESS_MAGIC: Final = b"\x1f\x9d"
_TOKEN_MARGIN: Final = 60.0

_clock = time.time  # token expiry is judged against this clock


# -- configuration ----------------------------------------------------------------------------


class EsoTapConfig(TapQueryConfig):
    """An ADQL query against ESO's ``tap_obs``; ``base_url`` overrides the TAP root."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    format: Format = "votable"
    """Result format: ``"votable"`` (default: ESO's own, TABLEDATA), ``"json"`` or ``"csv"``
    (standard TAP, though ESO's pages list only VOTable, JSON and FITS). Stored as .vot, .json
    or .csv; with ``download = true`` the products are listed from it."""
    download: bool = False
    """Also fetch every product the result lists (by ``dp_id`` / ``access_url``) from ESO's
    data portal, besides the table."""
    max_products: int = Field(default=DEFAULT_MAX_PRODUCTS, ge=1)
    """With ``download = true``: a result with more rows than this fails the source before
    anything is fetched (a guard against downloading an archive by mistake)."""
    username: str | None = None
    """ESO User Portal login, for proprietary data only (public data needs none)."""
    password: str | None = None
    """Its password; give it as ``"${ESO_PASSWORD}"``, never inline."""
    token_url: str = DEFAULT_TOKEN_URL
    """ESO's OIDC token endpoint."""
    dataportal_url: str = DEFAULT_DATAPORTAL_URL
    """Where products are fetched by id (``<dataportal_url>/<dp_id>``); the Bearer token goes
    only to this URL's origin."""

    @field_validator("max_products")
    @classmethod
    def _sane_max_products(cls, value: int) -> int:
        if value > MAX_PRODUCTS_LIMIT:
            raise ValueError(
                f"at most {MAX_PRODUCTS_LIMIT} products per source (the listing is read whole "
                "at plan time): split the query into several sources (a WHERE clause on "
                "dp_id or the date)"
            )
        return value

    @field_validator("token_url", "dataportal_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value)

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> EsoTapConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password (for proprietary data), or neither")
        return self

    def listing_maxrec(self) -> int:
        """MAXREC of the plan-time query: one row past the guard, so crossing it shows."""
        guard = self.max_products + 1
        return guard if self.maxrec is None else min(self.maxrec, guard)


def service(config: EsoTapConfig) -> TapService:
    return TapService(base=config.base_url or DEFAULT_BASE_URL, provider=PROVIDER)


def citation() -> dict[str, str]:
    return {"terms": TERMS, "acknowledgement": ACKNOWLEDGEMENT}


# -- the plan ---------------------------------------------------------------------------------


async def plan(config: EsoTapConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    tap = service(config)
    if not config.download:
        async for asset in plan_query(
            ctx,
            tap,
            config.query,
            config.format,
            config.mode,
            config.maxrec,
            config.polling(),
            citation(),
        ):
            yield asset
        return
    async for asset in plan_products(config, ctx, tap):
        yield asset


async def plan_products(
    config: EsoTapConfig, ctx: PlanContext, tap: TapService
) -> AsyncIterator[Asset]:
    """The result table, then one asset per product it lists."""
    maxrec = config.listing_maxrec()
    tables = [
        asset
        async for asset in plan_query(
            ctx, tap, config.query, config.format, config.mode, maxrec, config.polling(), citation()
        )
    ]
    if not tables:  # --dry-run with an async query: plan_query logged the job it skipped
        ctx.log.info("dry run: the products would be listed from that job's result")
        return
    table = tables[0]
    body = await fetch_table(ctx, table)
    # Up to max_products rows of XML/JSON/CSV: parsed off the event loop, so downloads and
    # other sources keep going meanwhile.
    listing = await asyncio.to_thread(read_rows, body, config.format)
    check_listing(config, ctx, listing, maxrec)
    rows = listing.rows
    if not rows:
        ctx.log.info("ESO: the query matched no rows: nothing to download")
    auth = None
    if rows and config.username is not None and config.password is not None:
        tokens = EsoTokens(ctx, config.token_url, config.username, config.password)
        await tokens.login()
        auth = EsoAuth(tokens, config.dataportal_url)
    products = product_assets(config, ctx, tap, table.key, rows, auth)
    yield dataclasses.replace(table, opener=replay(body))
    if rows and not products:
        raise FetchError(
            "ESO: the result has no dp_id, obs_publisher_did or access_url values: select "
            "dp_id (dbo.raw, ivoa.ObsCore) or access_url to download products"
        )
    ctx.log.info("ESO: %d products listed by %d rows", len(products), len(rows))
    for product in products:
        yield product


async def fetch_table(ctx: PlanContext, table: Asset) -> bytes:
    """The result body, as the engine would store it (gzip undone), or the query's error."""
    try:
        response = await ctx.request("GET", table.url, headers=dict(table.headers), auth=table.auth)
    except HTTPStatusError as error:
        said = error_message(error.body)
        raise FetchError(
            f"ESO: the query was refused (HTTP {error.status_code}): "
            + (said or "check the ADQL query (examples: https://archive.eso.org/tap_obs/examples)")
        ) from None
    body = response.content
    if body.startswith(_GZIP_MAGIC):  # a gzip file as the body, not a Content-Encoding
        return await asyncio.to_thread(_gunzip, body)
    return body


def _gunzip(body: bytes) -> bytes:
    try:
        return gzip.decompress(body)
    except (OSError, EOFError, zlib.error) as error:
        raise FetchError(f"ESO: the gzip-encoded query result is corrupt: {error}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Listing:
    rows: list[dict[str, str]]
    overflow: bool = False


def read_rows(body: bytes, fmt: Format) -> Listing:
    """The result's rows as ``{column: text}`` (empty text for NULL); errors raise FetchError."""
    body = body.removeprefix(b"\xef\xbb\xbf")
    if body.lstrip().startswith(b"<"):
        return _votable_rows(body, fmt)
    if fmt == "votable":
        raise FetchError("ESO: the query result is not a VOTable (it does not start with '<')")
    if fmt == "json":
        return _json_rows(body)
    return _csv_rows(body)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _votable_rows(body: bytes, fmt: Format) -> Listing:
    try:
        root = parse_xml(body, "ESO: the query result")
    except FetchError:
        if fmt != "votable":
            raise FetchError(
                f"ESO: the service answered with an XML document instead of {fmt}"
            ) from None
        raise
    said = status_error(root)  # on the tree already parsed: the document is read once
    if said is not None:
        raise FetchError(f"ESO: the query failed: {said}")
    if fmt != "votable":
        raise FetchError(f"ESO: the service answered with an XML document instead of {fmt}")
    overflow = any(
        _local(e.tag) == "INFO"
        and e.get("name") == "QUERY_STATUS"
        and e.get("value", "").upper() == "OVERFLOW"
        for e in root.iter()
    )
    table = next((e for e in root.iter() if _local(e.tag) == "TABLE"), None)
    if table is None:
        return Listing([], overflow)
    names = [f.get("name") or f.get("ID") or "" for f in table if _local(f.tag) == "FIELD"]
    data = next((e for e in table if _local(e.tag) == "DATA"), None)
    if data is None:
        return Listing([], overflow)
    serialization = next(iter(data), None)
    if serialization is None:
        return Listing([], overflow)
    if _local(serialization.tag) != "TABLEDATA":
        raise FetchError(
            f"ESO: the VOTable result is serialised as {_local(serialization.tag)}, which this "
            'source cannot read at plan time: use format = "csv" or "json"'
        )
    rows = [_votable_row(names, tr) for tr in serialization if _local(tr.tag) == "TR"]
    return Listing(rows, overflow)


def _votable_row(names: list[str], tr: ET.Element) -> dict[str, str]:
    cells = ["".join(td.itertext()).strip() for td in tr if _local(td.tag) == "TD"]
    return dict(zip(names, cells, strict=False))


def _csv_rows(body: bytes) -> Listing:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FetchError("ESO: the CSV query result is not UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return Listing([])
    names = [name.strip() for name in header]
    return Listing([dict(zip(names, row, strict=False)) for row in reader if row])


def _json_rows(body: bytes) -> Listing:
    try:
        document = json.loads(body)
    except ValueError:
        raise FetchError("ESO: the JSON query result is not valid JSON") from None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(metadata, list) or not isinstance(data, list):
        raise FetchError(
            'ESO: the JSON result has no "metadata" and "data" arrays to list products from: '
            'use format = "votable"'
        )
    names = [str(m.get("name", "")) if isinstance(m, dict) else "" for m in metadata]
    rows = [
        {name: "" if value is None else str(value) for name, value in zip(names, row, strict=False)}
        for row in data
        if isinstance(row, list)
    ]
    return Listing(rows)


def check_listing(config: EsoTapConfig, ctx: PlanContext, listing: Listing, maxrec: int) -> None:
    """Refuse a result past ``max_products``; warn when ``maxrec`` may have cut it short."""
    if len(listing.rows) > config.max_products:
        raise FetchError(
            f"ESO: the query lists more than {config.max_products} products (max_products): "
            "narrow the query (TOP n, a WHERE clause) or raise max_products"
        )
    if listing.overflow or (config.maxrec is not None and len(listing.rows) >= maxrec > 0):
        ctx.log.warning(
            "ESO: the result may be cut at maxrec = %d rows: products past it are not listed",
            maxrec,
        )


# -- products ---------------------------------------------------------------------------------


def _value(row: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = (row.get(name) or "").strip()
        if value:
            return value
    return ""


def product_id(row: Mapping[str, str]) -> str:
    """``dp_id``; else the ``obs_publisher_did`` after ``?``; else from ``access_url``.

    An ``access_url`` naming the product in its ``ID`` parameter (ESO's DataLink,
    ``…/datalink/links?ID=ivo://eso.org/ID?ADP.2019-…``) gives the part of that ID after
    its last ``?``; any other ``access_url`` gives its last path segment.
    """
    if dp_id := _value(row, "dp_id"):
        return dp_id
    did = _value(row, "obs_publisher_did")
    if "?" in did:
        return did.rpartition("?")[2]
    url = _value(row, "access_url")
    if not url:
        return ""
    parts = urlsplit(url)
    ids = [value for name, value in parse_qsl(parts.query) if name.upper() == "ID" and value]
    if ids:
        return ids[-1].rpartition("?")[2]
    return parts.path.rstrip("/").rpartition("/")[2]


def product_file(dp_id: str) -> tuple[str, str, bool]:
    """``(file name, media type, store uncompressed)``, decided from the id alone."""
    safe = _UNSAFE.sub("_", dp_id).lstrip(".") or "product"
    lowered = safe.lower()
    for suffix in _FITS_SUFFIXES:
        if lowered.endswith(suffix) and len(safe) > len(suffix):
            return f"{safe[: -len(suffix)]}.fits", FITS_MEDIA_TYPE, True
    for suffix, media_type in _OTHER_FILES.items():
        if lowered.endswith(suffix) and len(safe) > len(suffix):
            return safe, media_type, False
    return f"{safe}.fits", FITS_MEDIA_TYPE, True


def product_url(config: EsoTapConfig, row: Mapping[str, str], dp_id: str) -> str:
    url = _value(row, "access_url")
    if url.startswith(("http://", "https://")) and "datalink" not in _value(row, "access_format"):
        return url
    return f"{config.dataportal_url.rstrip('/')}/{quote(dp_id, safe=':')}"


_PROVENANCE_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "obs_id": ("obs_id",),
    "ob_id": ("ob_id",),
    "obs_publisher_did": ("obs_publisher_did",),
    "target": ("target_name", "target", "object"),
    "instrument": ("instrument_name", "instrument"),
    "programme": ("proposal_id", "prog_id"),
    "collection": ("obs_collection",),
    "category": ("dp_cat", "dataproduct_type"),
    "date_obs": ("date_obs", "t_min"),
    "release_date": ("obs_release_date", "release_date"),
}


def product_provenance(
    row: Mapping[str, str], dp_id: str, query: str, tap: TapService, table_key: str
) -> dict[str, Any]:
    provenance: dict[str, Any] = {
        "provider": PROVIDER,
        "dp_id": dp_id,
        "query": query,
        "tap_service": tap.base,
        "table_key": table_key,
    }
    for name, columns in _PROVENANCE_COLUMNS.items():
        if value := _value(row, *columns):
            provenance[name] = value
    estimate = _value(row, "access_estsize")
    if estimate.isdigit():
        provenance["access_estsize_kb"] = int(estimate)  # ESO's estimate, not an exact size
    return provenance | citation()


def product_assets(
    config: EsoTapConfig,
    ctx: PlanContext,
    tap: TapService,
    table_key: str,
    rows: Iterable[Mapping[str, str]],
    auth: EsoAuth | None,
) -> list[Asset]:
    """One asset per distinct product id, in the result's order."""
    assets: dict[str, Asset] = {}
    ids: dict[str, str] = {}
    skipped = 0
    for row in rows:
        dp_id = product_id(row)
        if not dp_id:
            skipped += 1
            continue
        name, media_type, uncompress = product_file(dp_id)
        key = f"products/{name}"
        if key in assets:
            if ids[key] == dp_id:
                continue  # a result (a join) may list a product twice: fetch it once
            raise FetchError(
                f"ESO: products {ids[key]!r} and {dp_id!r} would both be stored as {key!r}: "
                "select dp_id (dbo.raw, ivoa.ObsCore) so each product has its own name"
            )
        ids[key] = dp_id
        assets[key] = Asset(
            url=product_url(config, row, dp_id),
            key=key,
            media_type=media_type,
            auth=auth,
            provenance=product_provenance(row, dp_id, config.query, tap, table_key),
            opener=product_opener(ctx, dp_id, config.username, uncompress),
        )
    if skipped and assets:
        ctx.log.warning("ESO: %d rows without dp_id or access_url skipped", skipped)
    return list(assets.values())


# -- bodies -----------------------------------------------------------------------------------


def replay(body: bytes) -> Opener:
    """Hand the engine the result the products were listed from (held since plan time)."""

    @asynccontextmanager
    async def open_table(asset: Asset, conditions: Conditions) -> AsyncIterator[Download]:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), _CHUNK):
                yield body[start : start + _CHUNK]

        yield Download(chunks=chunks(), media_type=asset.media_type)

    return open_table


def product_opener(ctx: PlanContext, dp_id: str, username: str | None, uncompress: bool) -> Opener:
    """The engine's conditional GET, with access refusals explained and frames uncompressed."""
    client, limiter = ctx.client, ctx.limiter

    @asynccontextmanager
    async def open_product(asset: Asset, conditions: Conditions) -> AsyncIterator[Download]:
        async with AsyncExitStack() as stack:
            try:
                download = await stack.enter_async_context(
                    client.open_asset(asset, conditions, limiter)
                )
            except HTTPStatusError as error:
                if error.status_code in (401, 403):
                    raise HTTPStatusError(
                        _refusal(dp_id, error.status_code, username), error.status_code, error.body
                    ) from None
                raise
            if uncompress and download.chunks is not None:
                download.chunks = uncompressed(download.chunks, dp_id)
            yield download

    return open_product


def _refusal(dp_id: str, status: int, username: str | None) -> str:
    said = f"ESO: access to {dp_id} refused (HTTP {status}): the data may still be proprietary"
    if username is None:
        return (
            f"{said}; give the username and password of an ESO User Portal account allowed to "
            'see it (username = "...", password = "${ESO_PASSWORD}")'
        )
    return f"{said}, and the ESO account {username!r} may not be allowed to see it"


async def uncompressed(chunks: AsyncIterator[bytes], dp_id: str) -> AsyncIterator[bytes]:
    """The body as FITS: a unix-compress (.Z) or gzip stream decoded, anything else as is."""
    iterator = aiter(chunks)
    head = b""
    while len(head) < 3:
        try:
            head += await anext(iterator)
        except StopAsyncIteration:
            break
    if head.startswith(_COMPRESS_MAGIC):
        decoder: _Decoder = _Unlzw(dp_id)
    elif head.startswith(_GZIP_MAGIC):
        decoder = _Gunzip(dp_id)
    else:
        if head:
            yield head
        async for chunk in iterator:
            yield chunk
        return
    decoder.feed(head)
    while True:
        async for out in decoder.drain():
            yield out
        try:
            decoder.feed(await anext(iterator))
        except StopAsyncIteration:
            break
    decoder.finish()
    async for out in decoder.drain():
        yield out
    decoder.check_end()


class _Decoder(Protocol):
    """Input fed whole, output drained in pieces of at most about ``_OUT_CAP`` bytes.

    ``finish`` and ``check_end`` do nothing unless a format needs them.
    """

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> None:
        """No more input is coming."""
        return None

    def drain(self) -> AsyncGenerator[bytes, None]: ...

    def check_end(self) -> None:
        """Raise if the stream ended where its format says it cannot."""
        return None


class _Gunzip(_Decoder):
    """gzip members one after another (as gzip(1) reads them)."""

    def __init__(self, dp_id: str) -> None:
        self._dp_id = dp_id
        self._z = zlib.decompressobj(wbits=31)
        self._input = b""

    def feed(self, data: bytes) -> None:
        self._input += data

    async def drain(self) -> AsyncGenerator[bytes, None]:
        while self._input:
            if self._z.eof:
                self._input = self._input.lstrip(b"\0")  # NUL padding between members
                if not self._input:
                    return
                self._z = zlib.decompressobj(wbits=31)
            try:
                out = self._z.decompress(self._input, _OUT_CAP)
            except zlib.error as error:
                raise FetchError(f"ESO: {self._dp_id}: the gzip body is corrupt: {error}") from None
            self._input = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            if out:
                yield out

    def check_end(self) -> None:
        if not self._z.eof:
            raise RetryableError(f"ESO: {self._dp_id}: the gzip body ends early (truncated)")


class _Unlzw(_Decoder):
    """Decoder for unix ``compress`` (.Z) streams, as ncompress and gzip's unlzw.c read them.

    Codes are LSB-first, 9 bits wide at first, one bit wider each time the table fills its
    width, up to the header's maxbits; in block mode code 256 clears the table. The encoder
    writes codes in groups of 8, so when the width changes or the table is cleared the rest
    of the current group is padding and is skipped. Strings up to ``_CACHED`` bytes are kept
    whole; longer ones are rebuilt from their prefix chain, so memory stays within about
    65536 x ``_CACHED`` bytes whatever the body.
    """

    _CACHED: Final = 256
    _CLEAR: Final = 256

    def __init__(self, dp_id: str) -> None:
        self._dp_id = dp_id
        self._input = b""
        self._pos = 0
        self._final = False
        self._started = False
        self._maxbits = 16
        self._block = True
        self._n = 9
        self._prev: bytes | None = None
        self._prev_code = -1
        self._strings: list[bytes | None] = []
        self._prefix: list[int] = []
        self._suffix: list[int] = []

    def feed(self, data: bytes) -> None:
        self._input = self._input[self._pos :] + data
        self._pos = 0

    def finish(self) -> None:
        self._final = True

    async def drain(self) -> AsyncGenerator[bytes, None]:
        while True:
            # Decoding is pure Python: big inputs go to a worker thread so the event loop
            # keeps other transfers moving; a few bytes are not worth the hop.
            if len(self._input) - self._pos >= _THREAD_INPUT:
                out = await asyncio.to_thread(self._decode)
            else:
                out = self._decode()
            if not out:
                return
            yield out

    def _corrupt(self, why: str) -> FetchError:
        return FetchError(f"ESO: {self._dp_id}: the unix-compressed (.Z) body is corrupt: {why}")

    def _start(self) -> bool:
        if len(self._input) < 3:
            if self._final and self._input:
                raise self._corrupt("no header")
            return False
        flags = self._input[2]
        self._maxbits, self._block = flags & 0x1F, bool(flags & 0x80)
        if flags & 0x60 or not 9 <= self._maxbits <= 16:
            raise self._corrupt(f"header flags {flags:#04x}")
        self._strings = [bytes((i,)) for i in range(256)]
        self._prefix = [-1] * 256
        self._suffix = list(range(256))
        if self._block:  # code 256 is CLEAR: a placeholder that never holds a string
            self._strings.append(None)
            self._prefix.append(-1)
            self._suffix.append(0)
        self._pos, self._started = 3, True
        return True

    def _string(self, code: int) -> bytes:
        tail = bytearray()
        while (known := self._strings[code]) is None:
            tail.append(self._suffix[code])
            code = self._prefix[code]
        tail.reverse()
        return known + bytes(tail)

    def _decode(self) -> bytes:
        """Decode whole code groups until about ``_OUT_CAP`` bytes are out or input runs dry."""
        if not self._started and not self._start():
            return b""
        data, pos, end = self._input, self._pos, len(self._input)
        strings, prefix, suffix = self._strings, self._prefix, self._suffix
        maxbits, block = self._maxbits, self._block
        top = 1 << maxbits
        prev, prev_code, n = self._prev, self._prev_code, self._n
        size = len(strings)
        out: list[bytes] = []
        produced = 0
        while produced < _OUT_CAP:
            limit = top if n == maxbits else (1 << n) - 1
            if size > limit:
                n += 1
                limit = top if n == maxbits else (1 << n) - 1
            avail = end - pos
            if avail >= n:
                count = 8
            elif self._final and avail * 8 >= n:
                count = avail * 8 // n  # the last group may be short
            else:
                break
            group = int.from_bytes(data[pos : pos + n], "little")
            pos += n
            mask = (1 << n) - 1
            for j in range(count):
                if j and size > limit:
                    break  # width grows: the rest of this group is padding
                code = group & mask
                group >>= n
                if code < size:
                    string = strings[code]
                    if string is None:
                        if code == self._CLEAR and block:
                            del strings[257:], prefix[257:], suffix[257:]
                            size, n, prev = 257, 9, None
                            break  # the rest of this group is padding
                        string = self._string(code)
                elif code == size and prev is not None:
                    string = prev + prev[:1]
                else:
                    raise self._corrupt(f"code {code} past the table's {size} entries")
                out.append(string)
                produced += len(string)
                if prev is not None:
                    if size < top:
                        strings.append(prev + string[:1] if len(prev) < self._CACHED else None)
                        prefix.append(prev_code)
                        suffix.append(string[0])
                        size += 1
                elif code >= 256:
                    raise self._corrupt("the first code is not a byte")
                prev, prev_code = string, code
        self._pos, self._prev, self._prev_code, self._n = pos, prev, prev_code, n
        return b"".join(out)


# -- credentials ------------------------------------------------------------------------------


def _expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, if the token is one (ESO's id_token is)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class EsoTokens:
    """ESO's Bearer token: fetched at plan time, fetched again when it expires or is refused."""

    def __init__(self, ctx: PlanContext, token_url: str, username: str, password: str) -> None:
        self._ctx = ctx
        self.token_url = token_url
        self._host = (urlsplit(token_url).hostname or "").lower()
        self._username = username
        self._password = password
        self._token: str | None = None
        self._expires: float | None = None
        self._lock = asyncio.Lock()
        ctx.add_secret(password)

    async def login(self, holding: str | None = None) -> str:
        """A fresh token. ``holding``: the host whose connection slot the caller holds."""
        params = {**TOKEN_PARAMS, "username": self._username, "password": self._password}
        try:
            if holding is not None and holding.lower() == self._host:
                # The caller holds a slot on this very host: waiting for another could deadlock.
                response = await self._ctx.client.client.get(self.token_url, params=params)
                if response.status_code >= 400:
                    raise HTTPStatusError(
                        f"HTTP {response.status_code}", response.status_code, response.content
                    )
            else:
                response = await self._ctx.request("GET", self.token_url, params=params)
        except HTTPStatusError as error:
            raise FetchError(
                f"ESO: login refused for user {self._username!r} at {self.token_url} "
                f"(HTTP {error.status_code}): check username and password"
            ) from None
        self._token = self._accept(response)
        self._expires = _expiry(self._token)
        self._ctx.log.info("ESO: logged in as %s", self._username)
        return self._token

    def _accept(self, response: httpx.Response) -> str:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        token = None
        if isinstance(payload, dict):
            token = payload.get("id_token") or payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise FetchError(f"ESO: {self.token_url} answered without an id_token")
        self._ctx.add_secret(token)
        return token

    async def bearer(self, holding: str | None = None) -> str:
        async with self._lock:
            expired = self._expires is not None and _clock() > self._expires - _TOKEN_MARGIN
            if self._token is None or expired:
                return await self.login(holding)
            return self._token

    async def renew(self, refused: str, holding: str | None = None) -> str:
        """A new token after ``refused`` got a 401 (unless another request renewed it already)."""
        async with self._lock:
            if self._token is not None and self._token != refused:
                return self._token
            return await self.login(holding)


class EsoAuth(httpx.Auth):
    """Bearer token for the data portal's origin only, checked again on every redirect hop."""

    def __init__(self, tokens: EsoTokens, dataportal_url: str) -> None:
        self.tokens = tokens
        url = httpx.URL(dataportal_url)
        self._origin = (url.scheme, url.host.lower(), url.port)

    def trusts(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host.lower(), url.port) == self._origin

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ESO tokens are fetched asynchronously: use httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self.trusts(request.url):
            request.headers.pop("Authorization", None)
            yield request  # another origin: a redirect away from the portal gets no token
            return
        holding = request.url.host
        token = await self.tokens.bearer(holding)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and request.method in ("GET", "HEAD"):
            # Ended early on ESO's side: one fresh token, one more try.
            token = await self.tokens.renew(token, holding)
            headers = httpx.Headers(request.headers)
            headers["Authorization"] = f"Bearer {token}"
            yield httpx.Request(
                request.method, request.url, headers=headers, extensions=request.extensions
            )


# -- registration -----------------------------------------------------------------------------


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [
        SourceType(
            "eso.tap",
            EsoTapConfig,
            plan,
            "ESO tap_obs (ivoa.ObsCore, dbo.raw…): one ADQL query, optionally its products",
        )
    ]


@hookimpl
def astroingest_host_limits() -> list[HostLimit]:
    # ESO publishes no limits for its portal; 4 connections keeps one source from hogging it.
    return [HostLimit(DATAPORTAL_HOST, connections=DATAPORTAL_CONNECTIONS)]
