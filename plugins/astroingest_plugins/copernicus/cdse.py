"""``plugin = "copernicus.cdse"``: products from the Copernicus Data Space Ecosystem (CDSE).

The plan searches the OData catalogue (no account needed), then yields one asset per
product: ``{download_url}/Products({Id})/$value`` with the size and the MD5/BLAKE3
checksums the catalogue publishes, all of which the engine verifies.

Why it is built the way it is:

* **Paging.** ``@odata.nextLink`` is followed until it is absent. The catalogue refuses
  ``$skip`` above 10 000 and stops sending nextLinks before that, so a query that
  matches more products than that (``$count=true`` says how many) is split into two
  half time windows, recursively. The halves are half-open (``ge``/``lt`` on
  ``ContentDate/Start``) so they neither overlap nor leave a gap; products are still
  de-duplicated by ``Id`` because the catalogue can shift under a long harvest. When
  no count comes back and a listing stops at the cap anyway, the search resumes from
  the last ``ContentDate/Start`` it saw (inclusive).
* **Tokens.** Access tokens live 10 minutes, refresh tokens 60. The password grant
  happens at plan time (so a wrong password fails the source once, clearly). Every
  download request then asks :class:`TokenManager` for a token that is valid for at
  least another minute, refreshing it first if not, under one lock so four concurrent
  downloads refresh once; a rejected refresh falls back to a new password grant. A
  request that has started never fails for a token expiring during its transfer: the
  server checks the token when the request arrives.
* **Token requests go through the engine's polite client** (the identity host gets a
  budget and 429/5xx retries like any other) - except one case: the auth flow runs
  while its download holds a connection slot of the download host, so when the token
  host *is* that host (a proxy or a test server), waiting for a second slot there
  could deadlock with every slot held by a download waiting for the same token. Only
  then does the refresh go straight through the engine's httpx client.
* **Redirects.** Downloads redirect to other hosts (``zipper.dataspace…``). The engine's
  client follows redirects itself, hop by hop, and runs the auth flow on each hop; the
  flow sends the Bearer token to the download host and to hosts under its parent
  domain (``*.dataspace.copernicus.eu``) only, and never from https down to http.
* **Four downloads per account.** CDSE allows 4 concurrent connections per account;
  the built-in host limits cap the real download hosts at 4, this source type
  refuses ``concurrency`` above 4, and a ``download_url`` on another host gets a
  4-connection budget for the run.
* **Sessions.** CDSE allows 100 active sessions per account and each password grant
  opens one, so the source logs out (Keycloak's ``…/logout``) once its assets are done.
* **Dry runs** list the catalogue (cheap searches) but do not log in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import Field, field_validator, model_validator

from astroingest import (
    Asset,
    FetchError,
    HostLimit,
    HTTPStatusError,
    PlanContext,
    RetryableError,
    SourceConfig,
    SourceType,
    hookimpl,
)
from astroingest._sources import check_http_url

DEFAULT_BASE_URL = "https://catalogue.dataspace.copernicus.eu/odata/v1"
DEFAULT_DOWNLOAD_URL = "https://download.dataspace.copernicus.eu/odata/v1"
DEFAULT_TOKEN_URL = (
    "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
)
DEFAULT_CLIENT_ID = "cdse-public"
PROVIDER = "Copernicus Data Space Ecosystem"

MAX_DOWNLOADS = 4
"""Concurrent connections CDSE allows per account (documentation: Quotas)."""
SKIP_CAP = 10_000
"""The catalogue answers ``$skip`` above this with 422 and omits nextLinks before it."""
MAX_PAGE_SIZE = 1000
RENEW_MARGIN = 60.0
"""Seconds of validity a token must have left to be sent; less, and it is renewed first."""

TERMS_URL = "https://dataspace.copernicus.eu/terms-and-conditions"
SENTINEL_LICENCE = (
    "Copernicus Sentinel data are free, full and open (Regulation (EU) No 377/2014, "
    "Commission Delegated Regulation (EU) No 1159/2013; Legal notice on the use of "
    "Copernicus Sentinel Data and Service Information). Attribute the source; state "
    "modifications ('Contains modified Copernicus Sentinel data <year>')."
)
OTHER_LICENCE = (
    "Distributed by the Copernicus Data Space Ecosystem under its terms and conditions; "
    "the collection's own data licence applies."
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PRODUCT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_WKT = re.compile(r"^(MULTI)?POLYGON\s*\(\s*\(.*\)\s*\)$", re.IGNORECASE | re.DOTALL)
_WKT_BODY = re.compile(r"^[0-9eE+\-.,()\s]*$")
_NATIVE_SUFFIXES = (".zip", ".nc")
"""Products named like a single file are delivered as that file (Sentinel-5P since late
2024 as NetCDF); every other product (``.SAFE``, ``.SEN3`` folders…) comes as a zip."""
_CHECKSUM_FIELDS = {"md5": "md5", "sha256": "sha256", "blake3": "blake3"}


def _utc(value: object) -> datetime:
    """A TOML datetime or date, or an ISO 8601 string, as an aware UTC datetime."""
    if isinstance(value, str):
        try:
            text = value.strip()
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 date or datetime (e.g. 2024-05-01T00:00:00Z)"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(
                "give a time zone (e.g. 2024-05-01T00:00:00Z): the catalogue's times are UTC"
            )
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise ValueError("must be a TOML datetime or date, or an ISO 8601 string")


class CdseConfig(SourceConfig):
    """Keys of ``plugin = "copernicus.cdse"`` (plus base_url, concurrency, rate…)."""

    collection: str = Field(
        pattern=_NAME.pattern,
        description="Collection/Name in the catalogue: SENTINEL-1, SENTINEL-2, SENTINEL-5P…",
    )
    start: datetime = Field(
        description="Earliest ContentDate/Start (inclusive): a TOML datetime with an offset "
        "(2024-05-01T00:00:00Z), a TOML date (midnight UTC) or such an ISO 8601 string."
    )
    end: datetime | None = Field(
        default=None,
        description="ContentDate/Start before this (exclusive), same forms as start; "
        "default: the time the run starts.",
    )
    product_type: str | None = Field(
        default=None,
        pattern=_NAME.pattern,
        description="The productType attribute, e.g. S2MSI1C, S2MSI2A, IW_GRDH_1S.",
    )
    area: str | list[float] | None = Field(
        default=None,
        description="Products intersecting this area: a WKT POLYGON/MULTIPOLYGON in "
        "lon/lat (EPSG:4326), or a bounding box [west, south, east, north].",
    )
    max_products: int | None = Field(
        default=None, ge=1, description="Stop after this many products (earliest first)."
    )
    page_size: int = Field(
        default=100, ge=1, le=MAX_PAGE_SIZE, description="Products per catalogue page ($top)."
    )
    username: str = Field(min_length=1, description="CDSE account (an e-mail address).")
    password: str = Field(
        min_length=1, repr=False, description='CDSE password; use "${CDSE_PASSWORD}".'
    )
    token_url: str = Field(
        default=DEFAULT_TOKEN_URL, description="OpenID Connect token endpoint (Keycloak)."
    )
    download_url: str = Field(
        default=DEFAULT_DOWNLOAD_URL,
        description="OData root that serves Products(<Id>)/$value downloads.",
    )
    client_id: str = Field(
        default=DEFAULT_CLIENT_ID, min_length=1, description="OAuth2 client of the password grant."
    )
    concurrency: int | None = Field(
        default=MAX_DOWNLOADS,
        ge=1,
        le=256,
        description="Downloads in flight; at most 4, the per-account limit of CDSE.",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _as_utc(cls, value: object) -> datetime | None:
        return None if value is None else _utc(value)

    @field_validator("concurrency")
    @classmethod
    def _per_account_limit(cls, value: int | None) -> int | None:
        if value is not None and value > MAX_DOWNLOADS:
            raise ValueError(
                f"at most {MAX_DOWNLOADS}: the Copernicus Data Space allows "
                f"{MAX_DOWNLOADS} concurrent downloads per account and refuses more (HTTP 429)"
            )
        return value

    @field_validator("token_url", "download_url")
    @classmethod
    def _http(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("area")
    @classmethod
    def _valid_area(cls, value: str | list[float] | None) -> str | list[float] | None:
        if isinstance(value, str):
            _check_wkt(value)
        elif value is not None:
            _check_bbox(value)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> CdseConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    @property
    def area_wkt(self) -> str | None:
        if self.area is None or isinstance(self.area, str):
            return None if self.area is None else self.area.strip()
        west, south, east, north = (_coordinate(v) for v in self.area)
        ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
        return "POLYGON((" + ",".join(f"{x} {y}" for x, y in ring) + "))"


def _check_wkt(value: str) -> None:
    text = value.strip()
    if not _WKT.match(text):
        raise ValueError("a WKT POLYGON((lon lat, …)) or MULTIPOLYGON, or [W, S, E, N]")
    # The WKT goes into an OData string literal: only numbers and punctuation may follow.
    body = text[text.index("(") :]
    if not _WKT_BODY.match(body) or body.count("(") != body.count(")"):
        raise ValueError("the WKT may hold only numbers, commas and balanced parentheses")


def _check_bbox(value: list[float]) -> None:
    if len(value) != 4:
        raise ValueError("a bounding box is [west, south, east, north]")
    west, south, east, north = value
    if not (-180 <= west < east <= 180):
        raise ValueError(
            "need -180 <= west < east <= 180 (for a box across the antimeridian, "
            "give a WKT MULTIPOLYGON)"
        )
    if not (-90 <= south < north <= 90):
        raise ValueError("need -90 <= south < north <= 90")


def _coordinate(value: float) -> str:
    return f"{float(value):.10g}"


# -- time windows ----------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    """The catalogue's literal form, to the millisecond (as the CDSE documentation writes it)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _floor_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _content_start(product: Mapping[str, Any]) -> datetime | None:
    content = product.get("ContentDate")
    start = content.get("Start") if isinstance(content, dict) else None
    if not isinstance(start, str):
        return None
    try:
        return datetime.fromisoformat(start).astimezone(UTC)
    except ValueError:
        return None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- searching -------------------------------------------------------------------------------


@dataclass(slots=True)
class Search:
    """The catalogue query of one source, paged and split into time windows as needed."""

    ctx: PlanContext
    products_url: str
    collection: str
    product_type: str | None
    area_wkt: str | None
    page_size: int
    max_products: int | None = None
    seen: set[str] = field(default_factory=set)

    def filter(self, start: datetime, end: datetime) -> str:
        parts = [f"Collection/Name eq {_literal(self.collection)}"]
        if self.product_type is not None:
            parts.append(
                "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' and "
                f"att/OData.CSC.StringAttribute/Value eq {_literal(self.product_type)})"
            )
        if self.area_wkt is not None:
            parts.append(f"OData.CSC.Intersects(area=geography'SRID=4326;{self.area_wkt}')")
        parts.append(f"ContentDate/Start ge {_iso(start)}")
        parts.append(f"ContentDate/Start lt {_iso(end)}")
        return " and ".join(parts)

    def params(self, start: datetime, end: datetime) -> dict[str, str]:
        return {
            "$filter": self.filter(start, end),
            "$orderby": "ContentDate/Start asc",
            "$top": str(self.page_size),
            "$count": "true",
        }

    async def products(self, start: datetime, end: datetime) -> AsyncIterator[dict[str, Any]]:
        """Every matching product once, earliest first, up to ``max_products``."""
        async with aclosing(self._window(_floor_ms(start), _floor_ms(end))) as found:
            async for product in found:
                product_id = product.get("Id")
                if not isinstance(product_id, str) or product_id in self.seen:
                    continue
                self.seen.add(product_id)
                yield product
                if self.max_products is not None and len(self.seen) >= self.max_products:
                    return

    async def _window(self, start: datetime, end: datetime) -> AsyncGenerator[dict[str, Any], None]:
        page = await self._first_page(start, end)
        count = page.get("@odata.count")
        if isinstance(count, int) and count > SKIP_CAP and end - start > timedelta(milliseconds=1):
            middle = _floor_ms(start + (end - start) / 2)
            self.ctx.log.info(
                "%d products between %s and %s: more than the catalogue pages through "
                "($skip <= %d), so the window is split at %s",
                count,
                _iso(start),
                _iso(end),
                SKIP_CAP,
                _iso(middle),
            )
            for product in _products_of(page):  # the earliest ones; the halves repeat them
                yield product
            async for product in self._window(start, middle):
                yield product
            async for product in self._window(middle, end):
                yield product
            return
        received = 0
        last: dict[str, Any] | None = None
        url = self.products_url
        while True:
            products = _products_of(page)
            for product in products:
                yield product
            received += len(products)
            last = products[-1] if products else last
            link = page.get("@odata.nextLink")
            if not isinstance(link, str) or not products:
                break
            url = urljoin(url, link)
            next_page = await self._next_page(url)
            if next_page is None:
                break
            page = next_page
        if _truncated(count, received, len(products), self.page_size):
            async for product in self._resume(start, end, last, count, received):
                yield product

    async def _resume(
        self,
        start: datetime,
        end: datetime,
        last: dict[str, Any] | None,
        count: object,
        received: int,
    ) -> AsyncIterator[dict[str, Any]]:
        """Continue a listing cut at the skip cap from its last ContentDate/Start, inclusive."""
        resume = _content_start(last) if last is not None else None
        if resume is None or _floor_ms(resume) <= start:
            raise FetchError(
                f"CDSE: more than {SKIP_CAP} products share ContentDate/Start {_iso(start)}; "
                "narrow the query (area, product_type)"
            )
        self.ctx.log.info(
            "the catalogue stopped after %d of %s products at the $skip cap; resuming from %s",
            received,
            count if isinstance(count, int) else "more",
            _iso(resume),
        )
        async for product in self._window(_floor_ms(resume), end):
            yield product

    async def _first_page(self, start: datetime, end: datetime) -> dict[str, Any]:
        try:
            page = await self.ctx.get_json(self.products_url, params=self.params(start, end))
        except HTTPStatusError as error:
            raise FetchError(
                f"CDSE: the catalogue refused the query (HTTP {error.status_code}{_why(error)}): "
                f"check collection, product_type and area; $filter was: {self.filter(start, end)}"
            ) from None
        return _checked_page(page)

    async def _next_page(self, url: str) -> dict[str, Any] | None:
        try:
            return _checked_page(await self.ctx.get_json(url))
        except HTTPStatusError as error:
            if error.status_code == 422:  # $skip past the cap: treated like a missing nextLink
                return None
            raise


def _why(error: HTTPStatusError) -> str:
    """The reason a JSON error body gives (Keycloak's error_description, OData's detail)."""
    try:
        body = json.loads(error.body)
    except ValueError:
        return ""  # an HTML error page says nothing worth a log line
    reason: object = None
    if isinstance(body, dict):
        reason = body.get("error_description") or body.get("error") or body.get("detail")
    if isinstance(reason, list):  # FastAPI's [{"msg": …, "loc": […]}]
        reason = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in reason)
    text = " ".join(str(reason).split()) if reason else ""
    return f": {text[:200]}" if text else ""


def _checked_page(page: object) -> dict[str, Any]:
    if not isinstance(page, dict) or not isinstance(page.get("value"), list):
        raise FetchError("CDSE: the catalogue answered with something else than an OData list")
    return page


def _products_of(page: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in page["value"] if isinstance(p, dict)]


def _truncated(count: object, received: int, last_page: int, page_size: int) -> bool:
    """Whether a listing ended at the skip cap with products left over."""
    if received < SKIP_CAP:
        return False  # a nextLink is only withheld below the cap on the last page
    if isinstance(count, int):
        return count > received
    return last_page >= page_size


# -- tokens ----------------------------------------------------------------------------------


def _clock() -> float:
    return time.monotonic()


@dataclass(slots=True)
class _Token:
    access: str
    access_until: float
    lifetime: float
    refresh: str | None
    refresh_until: float | None


class TokenManager:
    """One account's OAuth2 tokens: password grant, refresh before expiry, logout."""

    def __init__(
        self,
        ctx: PlanContext,
        token_url: str,
        client_id: str,
        username: str,
        password: str,
        clock: Callable[[], float] = _clock,
    ) -> None:
        self._ctx = ctx
        self.token_url = token_url
        # Messages name the host: the engine's redactor treats the token_url value itself as
        # a secret (its key contains "token") and would print it as "***".
        self._host = (urlsplit(token_url).hostname or "").lower()
        self._client_id = client_id
        self._username = username
        self._password = password
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    async def login(self, holding: str | None = None) -> None:
        """The password grant; a refusal is a FetchError that never contains the password."""
        form = {
            "grant_type": "password",
            "username": self._username,
            "password": self._password,
            "client_id": self._client_id,
        }
        try:
            self._accept(await self._post(form, holding))
        except HTTPStatusError as error:
            raise FetchError(
                f"CDSE: login as {self._username!r} at {self._host} was refused "
                f"(HTTP {error.status_code}{_why(error)}): check username and password (an "
                "account with two-factor authentication cannot log in with a password alone)"
            ) from None
        except RetryableError as error:
            raise FetchError(
                f"CDSE: the identity server {self._host} is not answering ({error}); "
                "try again later"
            ) from None

    async def bearer(self, holding: str | None = None) -> str:
        """An access token valid for at least the renewal margin, renewed first if need be.

        ``holding`` is the host whose connection slot the caller holds (see the module doc).
        """
        token = self._token
        if token is not None and self._fresh(token):
            return token.access
        async with self._lock:
            token = self._token
            if token is None or not self._fresh(token):
                await self._renew(holding)
            assert self._token is not None
            return self._token.access

    def invalidate(self, access: str) -> None:
        """Forget ``access`` (the server rejected it) unless it was renewed meanwhile."""
        if self._token is not None and self._token.access == access:
            self._token.access_until = float("-inf")

    async def logout(self) -> None:
        """End the Keycloak session the password grant opened (100 are allowed per account)."""
        token = self._token
        if token is None or token.refresh is None or not self.token_url.endswith("/token"):
            return
        url = self.token_url.removesuffix("/token") + "/logout"
        form = {"client_id": self._client_id, "refresh_token": token.refresh}
        await self._ctx.request("POST", url, data=form)
        self._token = None

    def _fresh(self, token: _Token) -> bool:
        margin = min(RENEW_MARGIN, token.lifetime / 2)
        return self._clock() < token.access_until - margin

    async def _renew(self, holding: str | None) -> None:
        token = self._token
        if (
            token is not None
            and token.refresh is not None
            and (token.refresh_until is None or self._clock() < token.refresh_until - 1.0)
        ):
            form = {
                "grant_type": "refresh_token",
                "refresh_token": token.refresh,
                "client_id": self._client_id,
            }
            try:
                self._accept(await self._post(form, holding))
                return
            except HTTPStatusError as error:
                self._ctx.log.info(
                    "CDSE: token refresh refused (HTTP %d); logging in again", error.status_code
                )
        await self.login(holding)

    async def _post(self, form: dict[str, str], holding: str | None) -> dict[str, Any]:
        if holding is not None and holding.lower() == self._host:
            response = await self._ctx.client.client.post(self.token_url, data=form)
            if response.status_code >= 400:
                raise HTTPStatusError(
                    f"HTTP {response.status_code} from {self._host}", response.status_code
                )
        else:
            response = await self._ctx.request("POST", self.token_url, data=form)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise FetchError(f"CDSE: {self._host} answered without a JSON token")
        return payload

    def _accept(self, payload: Mapping[str, Any]) -> None:
        access = payload.get("access_token")
        if not isinstance(access, str) or not access:
            raise FetchError(f"CDSE: {self._host} answered without an access_token")
        now = self._clock()
        lifetime = _seconds(payload.get("expires_in"), 600.0)
        refresh = payload.get("refresh_token")
        # Minted at run time: the engine's redactor must learn them before any message can
        # show one (an error echoing a token, a URL carrying it).
        self._ctx.add_secret(access)
        if isinstance(refresh, str) and refresh:
            self._ctx.add_secret(refresh)
        refresh_for = _seconds(payload.get("refresh_expires_in"), 3600.0)
        self._token = _Token(
            access=access,
            access_until=now + lifetime,
            lifetime=lifetime,
            refresh=refresh if isinstance(refresh, str) and refresh else None,
            # Keycloak sends 0 for refresh tokens that do not expire (offline sessions).
            refresh_until=now + refresh_for if refresh_for > 0 else None,
        )


def _seconds(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


class CdseAuth(httpx.Auth):
    """Bearer token on every request of a download, redirected hops included.

    The engine's client follows redirects hop by hop and runs this flow again for each
    hop, so each hop gets a token only if its host belongs to the Data Space.
    """

    def __init__(self, tokens: TokenManager, download_url: str) -> None:
        self.tokens = tokens
        parts = urlsplit(download_url)
        self._scheme = parts.scheme
        self._host = (parts.hostname or "").lower()
        labels = self._host.split(".")
        # download.dataspace.copernicus.eu trusts *.dataspace.copernicus.eu (zipper…).
        is_name = len(labels) >= 3 and not self._host.replace(".", "").isdigit()
        self._domain = "." + ".".join(labels[1:]) if is_name else None

    def trusts(self, url: httpx.URL) -> bool:
        """Whether a request to ``url`` may carry the token."""
        if self._scheme == "https" and url.scheme != "https":
            return False
        host = url.host.lower()
        return host == self._host or (self._domain is not None and host.endswith(self._domain))

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("CDSE tokens are renewed asynchronously: use httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self.trusts(request.url):
            yield request  # a redirect away from the Data Space: no token goes there
            return
        holding = request.url.host
        token = await self.tokens.bearer(holding)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and request.method in ("GET", "HEAD"):
            # Revoked or ended server-side before its time: one fresh token, one more try.
            self.tokens.invalidate(token)
            token = await self.tokens.bearer(holding)
            headers = httpx.Headers(request.headers)
            headers["Authorization"] = f"Bearer {token}"
            yield httpx.Request(
                request.method, request.url, headers=headers, extensions=request.extensions
            )


# -- assets ----------------------------------------------------------------------------------


def _file_name(name: str) -> tuple[str, str]:
    """The stored file name and media type of a product's ``$value``."""
    lowered = name.lower()
    if lowered.endswith(".nc"):
        return name, "application/x-netcdf"
    if lowered.endswith(_NATIVE_SUFFIXES):
        return name, "application/zip"
    return f"{name}.zip", "application/zip"


def _checksums(product: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    entries = product.get("Checksum")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        algorithm = str(entry.get("Algorithm", "")).lower().replace("-", "")
        value = entry.get("Value")
        if algorithm in _CHECKSUM_FIELDS and isinstance(value, str) and _HEX.match(value):
            found[_CHECKSUM_FIELDS[algorithm]] = value.lower()
    return found


def _licence(collection: str, content_start: datetime | None) -> dict[str, str]:
    if collection.upper().startswith("SENTINEL"):
        year = f" {content_start.year}" if content_start is not None else ""
        return {
            "licence": SENTINEL_LICENCE,
            "terms": TERMS_URL,
            "attribution": f"Copernicus Sentinel data{year}",
        }
    return {
        "licence": OTHER_LICENCE,
        "terms": TERMS_URL,
        "attribution": f"{collection} data from the Copernicus Data Space Ecosystem",
    }


@dataclass(frozen=True, slots=True)
class _Planner:
    config: CdseConfig
    catalogue: str
    download: str
    query: Mapping[str, str]
    auth: httpx.Auth | None

    def asset(self, product: Mapping[str, Any], log: logging.Logger) -> Asset | None:
        product_id, name = product.get("Id"), product.get("Name")
        if not isinstance(product_id, str) or not _PRODUCT_ID.match(product_id):
            log.warning("CDSE: skipping a product without a usable Id: %r", product_id)
            return None
        if not isinstance(name, str) or not name.strip():
            log.warning("CDSE: skipping product %s: it has no Name", product_id)
            return None
        if product.get("Online") is False:
            log.warning("CDSE: skipping product %s (%s): it is offline", product_id, name)
            return None
        file_name, media_type = _file_name(name)
        checksums = _checksums(product)
        size = product.get("ContentLength")
        start = _content_start(product)
        content = product.get("ContentDate")
        return Asset(
            url=f"{self.download}/Products({product_id})/$value",
            key=f"{self.config.collection}/{file_name}",
            size=size
            if isinstance(size, int) and not isinstance(size, bool) and size > 0
            else None,
            md5=checksums.pop("md5", None),
            sha256=checksums.pop("sha256", None),
            checksums=checksums,
            media_type=media_type,
            auth=self.auth,
            provenance={
                "provider": PROVIDER,
                "endpoint": self.catalogue,
                "collection": self.config.collection,
                "product_id": product_id,
                "product_name": name,
                "product_type": self.config.product_type,
                "content_date": content if isinstance(content, dict) else None,
                "footprint": product.get("Footprint"),
                "s3_path": product.get("S3Path"),
                "publication_date": product.get("PublicationDate"),
                "query": dict(self.query),
                **_licence(self.config.collection, start),
            },
        )


async def plan(config: CdseConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    catalogue = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
    download = config.download_url.rstrip("/")
    end = config.end or datetime.now(UTC)
    search = Search(
        ctx,
        f"{catalogue}/Products",
        config.collection,
        config.product_type,
        config.area_wkt,
        config.page_size,
        config.max_products,
    )
    query = {"$filter": search.filter(config.start, end), "$orderby": "ContentDate/Start asc"}
    auth: CdseAuth | None = None
    if ctx.dry_run:
        ctx.log.info("dry run: listing the catalogue; not logging in, nothing is downloaded")
    else:
        _limit_downloads(download, ctx)
        tokens = TokenManager(
            ctx, config.token_url, config.client_id, config.username, config.password, _clock
        )
        await tokens.login()
        ctx.on_finish(tokens.logout)
        auth = CdseAuth(tokens, download)
    planner = _Planner(config, catalogue, download, query, auth)
    planned = 0
    async for product in search.products(config.start, end):
        asset = planner.asset(product, ctx.log)
        if asset is not None:
            planned += 1
            yield asset
    if not search.seen:
        ctx.log.info("CDSE: no products match %s", query["$filter"])
    elif planned:
        ctx.log.info("CDSE: %d products planned", planned)


def _limit_downloads(download_url: str, ctx: PlanContext) -> None:
    """The per-account limit for a download host that the built-in host limits do not name."""
    host = urlsplit(download_url).hostname
    if host and host != urlsplit(DEFAULT_DOWNLOAD_URL).hostname:
        ctx.host_limit(HostLimit(host, MAX_DOWNLOADS))


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [
        SourceType(
            "copernicus.cdse",
            CdseConfig,
            plan,
            "Copernicus Data Space Ecosystem: OData catalogue search, products downloaded",
        )
    ]
