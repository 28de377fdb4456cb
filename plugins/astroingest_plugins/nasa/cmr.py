"""``plugin = "nasa.cmr"``: granules found by an Earthdata CMR search, fetched with an EDL token.

The plan searches ``<base_url>/granules.umm_json`` (UMM-G results), pages with the
``CMR-Search-After`` header, and yields one asset per data link of each granule
(``RelatedUrls`` of type ``GET DATA`` by default). The size and checksum CMR publishes
for a file (``DataGranule.ArchiveAndDistributionInformation``) are handed to the
engine, which fails the asset on a mismatch.

Downloads carry ``Authorization: Bearer <EDL token>`` through :class:`EarthdataBearer`:
on every redirect hop it goes to the link's own host and to Earthdata Login (where
on-premises DAACs send a download), never elsewhere (a cloud DAAC's presigned S3 URL),
and only over https: never over plain http, not even to a trusted host (an ``http://``
link, or an https link redirected down to http). Loopback addresses (a test server on
127.0.0.1) are the one exception, as browsers treat them as secure.
A username/password is exchanged for the token once, at plan time; the engine is told
to scrub that token from logs, errors and reports.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import posixpath
import re
from collections.abc import AsyncIterator, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import Field, field_validator, model_validator

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
from astroingest._sources import check_http_url

DEFAULT_BASE_URL = "https://cmr.earthdata.nasa.gov/search"
DEFAULT_TOKEN_URL = "https://urs.earthdata.nasa.gov/api/users/find_or_create_token"
MAX_PAGE_SIZE = 2000
PROVIDER = "NASA Earthdata CMR"
CLIENT_ID = "astroingest"
EDL_HOSTS = frozenset(
    {"urs.earthdata.nasa.gov", "uat.urs.earthdata.nasa.gov", "sit.urs.earthdata.nasa.gov"}
)
"""Earthdata Login (production, UAT, SIT): data servers send users there to sign in."""


def secure_transport(url: httpx.URL | str) -> bool:
    """Whether a credential may travel to ``url``: https, or http to a loopback address.

    A loopback address (127.0.0.0/8, ::1, localhost) never leaves the machine: a local
    test server or tunnel, which browsers count as secure too.
    """
    url = httpx.URL(url) if isinstance(url, str) else url
    if url.scheme == "https":
        return True
    if url.scheme != "http":
        return False
    host = url.host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CmrConfig(SourceConfig):
    """A CMR granule search and the downloads of its granules' data files."""

    short_name: str | None = Field(
        default=None, description='Collection short name (CMR `short_name`), e.g. "MYD021KM".'
    )
    version: str | None = Field(
        default=None, description='Collection version (CMR `version`), e.g. "6" or "2205".'
    )
    concept_id: str | list[str] = Field(
        default=[],
        description='Granule concept id(s) (CMR `concept_id`), e.g. "G1593453400-LAADS".',
    )
    collection_concept_id: str | list[str] = Field(
        default=[],
        description=(
            'Collection concept id(s) (CMR `collection_concept_id`), e.g. "C2270392799-POCLOUD".'
        ),
    )
    provider: str | None = Field(
        default=None, description='CMR provider id (CMR `provider`), e.g. "POCLOUD" or "LAADS".'
    )
    temporal: list[str | datetime | date] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description=(
            "[start, end] (CMR `temporal[]`): ISO 8601 strings or TOML datetimes; "
            '"" leaves that side open.'
        ),
    )
    bounding_box: list[float] | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="[west, south, east, north] in degrees (CMR `bounding_box`).",
    )
    page_size: int = Field(
        default=MAX_PAGE_SIZE,
        ge=1,
        le=MAX_PAGE_SIZE,
        description="Granules per search page (CMR allows at most 2000).",
    )
    max_granules: int | None = Field(
        default=None, ge=1, description="Stop after this many granules (default: all matches)."
    )
    link_types: list[str] = Field(
        default=["GET DATA"],
        min_length=1,
        description=('RelatedUrls types to download; add "EXTENDED METADATA" for sidecar files.'),
    )
    token: str | None = Field(
        default=None,
        description=(
            'Earthdata Login user token, e.g. "${EARTHDATA_TOKEN}"; sent as a Bearer token.'
        ),
    )
    username: str | None = Field(
        default=None,
        description=(
            "Earthdata Login username; with `password`, exchanged for a token "
            "when no token is given."
        ),
    )
    password: str | None = Field(
        default=None, description='Earthdata Login password, e.g. "${EARTHDATA_PASSWORD}".'
    )
    token_url: str = Field(
        default=DEFAULT_TOKEN_URL,
        description="EDL token API: POSTed with Basic auth to find (or create) the user's token.",
    )
    search_with_token: bool = Field(
        default=False,
        description="Send the token on CMR searches too (needed only for restricted collections).",
    )

    @field_validator("token_url")
    @classmethod
    def _http_token_url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("bounding_box")
    @classmethod
    def _box_in_range(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            west, south, east, north = value
            if not all(-180 <= x <= 180 for x in (west, east)):
                raise ValueError("west and east must be within [-180, 180]")
            if not (-90 <= south <= north <= 90):
                raise ValueError("south and north must be within [-90, 90], south <= north")
        return value

    @model_validator(mode="after")
    def _sane(self) -> CmrConfig:
        if not (self.short_name or self.concept_id or self.collection_concept_id):
            raise ValueError(
                "give short_name, concept_id or collection_concept_id: a granule search "
                "across every collection is capped by CMR and rarely what you want"
            )
        if bool(self.username) != bool(self.password):
            raise ValueError("give username and password together (or a token)")
        return self


# -- search -------------------------------------------------------------------------------


def search_params(config: CmrConfig, page_size: int) -> list[tuple[str, str]]:
    """The CMR query, in the parameter spelling CMR documents (lists as ``name[]``)."""
    params: list[tuple[str, str]] = []
    for name in ("short_name", "version", "provider"):
        value = getattr(config, name)
        if value:
            params.append((name, value))
    for name in ("concept_id", "collection_concept_id"):
        values = _as_list(getattr(config, name))
        # A single value is sent bare, as CMR's own examples and recorded clients do.
        params += [(name if len(values) == 1 else f"{name}[]", v) for v in values]
    if config.temporal:
        start, end = config.temporal
        params.append(("temporal[]", f"{_instant(start, end=False)},{_instant(end, end=True)}"))
    if config.bounding_box:
        params.append(("bounding_box", ",".join(_number(x) for x in config.bounding_box)))
    params.append(("page_size", str(page_size)))
    return params


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _instant(value: str | datetime | date, *, end: bool) -> str:
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        # A bare end date means the whole of that day.
        return f"{value.isoformat()}T{'23:59:59' if end else '00:00:00'}Z"
    return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def cmr_errors(body: bytes | None) -> list[str]:
    """The messages of a CMR ``{"errors": [...]}`` body; empty when it is not one."""
    try:
        document = json.loads(body or b"")
    except ValueError:
        return []
    errors = document.get("errors") if isinstance(document, dict) else None
    if isinstance(errors, str):
        errors = [errors]
    if not isinstance(errors, list):
        return []
    return [e if isinstance(e, str) else json.dumps(e) for e in errors]


@dataclass(slots=True)
class _Search:
    """One search, paged with CMR-Search-After."""

    url: str
    params: list[tuple[str, str]]
    page_size: int
    limit: int | None
    token: str | None
    send_token: bool
    hits: int | None = None
    pages: int = 0
    seen: int = 0
    search_after: str | None = None

    async def granules(self, ctx: PlanContext) -> AsyncIterator[dict[str, Any]]:
        while True:
            response, items = await self._page(ctx)
            for item in items:
                if self.limit is not None and self.seen >= self.limit:
                    return
                self.seen += 1
                yield item
            if self._last(response, items):
                return

    def _last(self, response: httpx.Response, items: list[dict[str, Any]]) -> bool:
        if len(items) < self.page_size:
            return True
        if self.limit is not None and self.seen >= self.limit:
            return True
        if self.hits is not None and self.seen >= self.hits:
            return True
        after = response.headers.get("CMR-Search-After")
        if not after:
            if self.hits is None:
                return True  # nothing says there is more
            raise FetchError(
                f"CMR: a full page came without a CMR-Search-After header after {self.seen} "
                f"of {self.hits} granules; cannot page further"
            )
        if after == self.search_after:
            raise FetchError(f"CMR: CMR-Search-After did not advance after {self.seen} granules")
        self.search_after = after
        return False

    async def _page(self, ctx: PlanContext) -> tuple[httpx.Response, list[dict[str, Any]]]:
        headers = {"Client-Id": CLIENT_ID}
        if self.search_after is not None:
            headers["CMR-Search-After"] = self.search_after
        if self.send_token and self.token:
            if not secure_transport(self.url):
                raise FetchError(
                    f"CMR: search_with_token needs an https base_url; {self.url} is plain "
                    "http, and the Earthdata token is never sent over http"
                )
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = await ctx.request("GET", self.url, params=self.params, headers=headers)
        except (HTTPStatusError, RetryableError) as error:
            raise self._explained(error) from None
        document = _json(response, "CMR search")
        if messages := cmr_errors(response.content):
            raise FetchError(self._scrub(f"CMR search failed: {'; '.join(messages)}"))
        items = document.get("items") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise FetchError("CMR search answered without an items list (not UMM-G JSON)")
        self.pages += 1
        if self.pages == 1:
            self.hits = _hits(response, document)
            self._log_hits(ctx)
        return response, [i for i in items if isinstance(i, dict)]

    def _explained(self, error: HTTPStatusError | RetryableError) -> Exception:
        # CMR explains itself in the error body: {"errors": ["..."]}.
        messages = cmr_errors(error.body)
        if not messages:
            return error
        status = f"HTTP {error.status_code}" if error.status_code else "error"
        hint = ""
        if error.status_code in (401, 403):
            hint = (
                " (restricted collection? set search_with_token = true with a token)"
                if not self.send_token
                else " (check the Earthdata token)"
            )
        return FetchError(self._scrub(f"CMR search failed ({status}): {'; '.join(messages)}{hint}"))

    def _scrub(self, text: str) -> str:
        # CMR echoes bad tokens back ("Token [...] does not exist"); a token obtained from
        # username/password is not one the engine's redactor knows.
        return text.replace(self.token, "REDACTED") if self.token else text

    def _log_hits(self, ctx: PlanContext) -> None:
        if self.hits is None:
            return
        if self.hits == 0:
            ctx.log.info("CMR: no granules match %s", self.url)
        elif self.limit is not None and self.hits > self.limit:
            ctx.log.info("CMR: %d granules match; taking the first %d", self.hits, self.limit)
        else:
            ctx.log.info("CMR: %d granules match", self.hits)


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown type")
        raise FetchError(f"{what} answered with a body that is not JSON ({kind})") from None


def _hits(response: httpx.Response, document: Any) -> int | None:
    header = response.headers.get("CMR-Hits", "")
    if header.isdigit():
        return int(header)
    hits = document.get("hits") if isinstance(document, dict) else None
    return hits if isinstance(hits, int) and not isinstance(hits, bool) else None


# -- Earthdata Login ----------------------------------------------------------------------


async def edl_token(config: CmrConfig, ctx: PlanContext) -> str | None:
    """The bearer token: configured, or exchanged for username/password at the EDL token API."""
    if config.token:
        return config.token
    if not (config.username and config.password):
        return None
    if ctx.dry_run and not config.search_with_token:
        ctx.log.info(
            "dry run: would exchange the Earthdata Login username/password for a token at %s",
            config.token_url,
        )
        return None
    basic = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
    # A header, not an httpx.BasicAuth flow: the engine drops caller headers on a
    # redirect to another origin, so the password cannot follow one.
    headers = {"Accept": "application/json", "Authorization": f"Basic {basic}"}
    try:
        response = await ctx.request("POST", config.token_url, headers=headers)
    except (HTTPStatusError, RetryableError) as error:
        raise _login_failed(config, error) from None
    document = _json(response, "Earthdata Login token API")
    token = document.get("access_token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        raise FetchError(
            f"Earthdata Login: {config.token_url} answered without an access_token; "
            "check token_url (it should be the EDL find_or_create_token endpoint)"
        )
    ctx.add_secret(token)  # minted at run time: the engine's redactor cannot know it yet
    expires = document.get("expiration_date")
    ctx.log.info("Earthdata Login: token for %s (expires %s)", config.username, expires or "?")
    return token


def _login_failed(config: CmrConfig, error: HTTPStatusError | RetryableError) -> FetchError:
    detail = ""
    try:
        body = json.loads(error.body or b"")
        if isinstance(body, dict):
            detail = str(body.get("error_description") or body.get("error") or "")
    except ValueError:
        pass
    status = error.status_code
    if status == 401:
        return FetchError(
            f"Earthdata Login rejected the username/password of user {config.username!r} "
            f"(HTTP 401{': ' + detail if detail else ''}): check the credentials, or set "
            'token = "${EARTHDATA_TOKEN}" (generate one at https://urs.earthdata.nasa.gov/profile)'
        )
    return FetchError(
        f"Earthdata Login token request to {config.token_url} failed "
        f"(HTTP {status}{': ' + detail if detail else ''})"
    )


class EarthdataBearer(httpx.Auth):
    """``Authorization: Bearer <EDL token>`` for one data host and Earthdata Login, nowhere else.

    The engine runs this flow again on every redirect hop. The token goes to the link's
    own host and to Earthdata Login (on-premises DAACs send a download through its OAuth
    authorize endpoint, which wants the token), never to where a cloud DAAC redirects a
    download: a presigned S3 URL must not see it (and S3 rejects a second credential).
    It goes over https only (see :func:`secure_transport`): a plain-http request, to a
    trusted host or not, never carries it.

    A client that follows redirects itself (plain httpx) runs the flow once per chain and
    strips the header on the way to Earthdata Login; when such a chain ends refused
    (401/403, or on the login service, which never serves data), its first hop to a
    trusted host that went without the header is sent again with it.
    """

    max_resends = 2

    def __init__(self, token: str, data_host: str, login_hosts: Iterable[str] = ()) -> None:
        self._header = f"Bearer {token}"
        self._login = EDL_HOSTS | frozenset(login_hosts)
        self._trusted = self._login | {data_host}

    def __repr__(self) -> str:
        return "EarthdataBearer(<token>)"

    def trusts(self, url: httpx.URL) -> bool:
        """Whether a request to ``url`` may carry the token: a trusted host, over https."""
        return url.host in self._trusted and secure_transport(url)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.trusts(request.url):
            request.headers["Authorization"] = self._header
        else:
            # A hop httpx built from a previous one may still carry the header.
            request.headers.pop("Authorization", None)
        response = yield request
        for _ in range(self.max_resends):
            hop = self._stripped_hop(response) if self._refused(response) else None
            if hop is None:
                return
            headers = httpx.Headers(hop.headers)
            headers["Authorization"] = self._header
            response = yield httpx.Request(
                hop.method, hop.url, headers=headers, extensions=hop.extensions
            )

    def _refused(self, response: httpx.Response) -> bool:
        return response.status_code in (401, 403) or response.url.host in self._login

    def _stripped_hop(self, response: httpx.Response) -> httpx.Request | None:
        chain = [r.request for r in response.history] + [response.request]
        for hop in chain[1:]:
            if self.trusts(hop.url) and "Authorization" not in hop.headers:
                return hop
        return None


# -- granules to assets -------------------------------------------------------------------

_CHECKSUMS = {
    "MD5": "md5",
    "SHA1": "sha1",
    "SHA256": "sha256",
    "SHA384": "sha384",
    "SHA512": "sha512",
}
"""UMM-G checksum algorithms the engine can verify (hashlib names); others go to provenance."""
_HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"^[0-9a-f]+$")
_DOI = re.compile(r"^https?://(?:dx\.)?doi\.org/(10\..+)$", re.I)


@dataclass(slots=True)
class Published:
    """What CMR says about one file: exact size and verifiable checksums, plus the rest."""

    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def published(entry: Mapping[str, Any] | None, log: logging.Logger | None = None) -> Published:
    """Size and checksum of an ArchiveAndDistributionInformation entry.

    Only an exact byte count becomes ``size`` (``SizeInBytes``, or ``Size`` in unit
    ``B``): sizes in KB/MB/GB are rounded and would fail good downloads.
    """
    out = Published()
    if not entry:
        return out
    out.record = {
        k: entry[k] for k in ("Name", "Size", "SizeUnit", "SizeInBytes", "Checksum") if k in entry
    }
    out.size = _exact_size(entry)
    checksum = entry.get("Checksum")
    if isinstance(checksum, Mapping):
        _take_checksum(out, checksum, log)
    return out


def _exact_size(entry: Mapping[str, Any]) -> int | None:
    in_bytes = entry.get("SizeInBytes")
    if isinstance(in_bytes, int) and not isinstance(in_bytes, bool) and in_bytes >= 0:
        return in_bytes
    size, unit = entry.get("Size"), entry.get("SizeUnit")
    if unit != "B" or isinstance(size, bool) or not isinstance(size, int | float):
        return None
    return int(size) if float(size).is_integer() and size >= 0 else None


def _take_checksum(out: Published, checksum: Mapping[str, Any], log: logging.Logger | None) -> None:
    algorithm, value = checksum.get("Algorithm"), checksum.get("Value")
    if not isinstance(algorithm, str) or not isinstance(value, str):
        return
    name = _CHECKSUMS.get(re.sub(r"[-_ ]", "", algorithm).upper())
    value = value.strip().lower()
    if name is None:
        return  # Adler-32, Fletcher, POSIX cksum…: kept in provenance only
    if len(value) != _HEX_LENGTH[name] or not _HEX.match(value):
        if log is not None:
            log.warning("CMR: ignoring a malformed %s checksum %r", algorithm, value)
        return
    if name == "md5":
        out.md5 = value
    elif name == "sha256":
        out.sha256 = value
    else:
        out.checksums[name] = value


def _file_entries(umm: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """ArchiveAndDistributionInformation entries, file packages' Files flattened in."""
    granule = umm.get("DataGranule")
    entries = (
        granule.get("ArchiveAndDistributionInformation") if isinstance(granule, dict) else None
    )
    out: list[Mapping[str, Any]] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        out.append(entry)
        files = entry.get("Files")
        out += [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    return out


def file_name(url: str) -> str:
    return posixpath.basename(unquote(urlsplit(url).path.rstrip("/")))


@dataclass(slots=True)
class GranuleContext:
    """What every asset of one search shares, and what was passed over."""

    endpoint: str
    query: dict[str, Any]
    link_types: tuple[str, ...]
    log: logging.Logger
    token: str | None = None
    login_hosts: frozenset[str] = frozenset()
    no_links: int = 0
    non_http: int = 0
    plain_http: int = 0
    _auths: dict[str, EarthdataBearer] = field(default_factory=dict)

    def auth_for(self, url: str) -> EarthdataBearer | None:
        """The bearer auth for a link, trusting that link's host (one per host)."""
        if self.token is None:
            return None
        host = urlsplit(url).hostname or ""
        if host not in self._auths:
            self._auths[host] = EarthdataBearer(self.token, host, self.login_hosts)
        return self._auths[host]


_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9._=+-]")
"""Characters the engine would replace in a key anyway ("LAADS:4389864073"); done here so
the planned key, a failure's key and the stored key are the same string."""
_PLACEHOLDER_NAMES = frozenset({"", "not provided", "not applicable", "unknown"})


def granule_assets(item: Mapping[str, Any], shared: GranuleContext) -> list[Asset]:
    """The assets of one UMM-G search item: one per downloadable data link."""
    meta, umm = _mapping(item.get("meta")), _mapping(item.get("umm"))
    granule = _first_str(meta.get("native-id"), umm.get("GranuleUR"), meta.get("concept-id"))
    if granule is None:
        shared.log.warning("CMR: skipping an item without native-id, GranuleUR or concept-id")
        return []
    links = _data_links(umm, granule, shared)
    if not links:
        shared.no_links += 1
        shared.log.debug("CMR: granule %s has no %s link", granule, " / ".join(shared.link_types))
        return []
    entries = _file_entries(umm)
    by_name = {e["Name"]: e for e in entries if isinstance(e.get("Name"), str)}
    base = _granule_provenance(meta, umm, shared)
    assets = []
    for link in links:
        url, name = link["URL"], file_name(link["URL"])
        facts = published(by_name.get(name) or _lone_entry(entries, links), shared.log)
        provenance = {**base, "link_type": link.get("Type")}
        if facts.record:
            provenance["published"] = facts.record
        mime = link.get("MimeType")
        assets.append(
            Asset(
                url=url,
                key=f"{_UNSAFE_KEY.sub('_', granule)}/{name}",
                size=facts.size,
                md5=facts.md5,
                sha256=facts.sha256,
                checksums=facts.checksums,
                media_type=mime if isinstance(mime, str) else None,
                auth=shared.auth_for(url),
                provenance=provenance,
            )
        )
    return assets


def _lone_entry(
    entries: Sequence[Mapping[str, Any]], links: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """One file, one entry, and the entry's Name a placeholder (LAADS: "Not provided").

    Then the entry can only describe that file. An entry named for another file is
    never borrowed: its size would fail a good download.
    """
    if len(entries) != 1 or len(links) != 1:
        return None
    name = entries[0].get("Name")
    placeholder = name is None or (
        isinstance(name, str) and name.strip().lower() in _PLACEHOLDER_NAMES
    )
    return entries[0] if placeholder else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _first_str(*values: Any) -> str | None:
    return next((v for v in values if isinstance(v, str) and v), None)


def _data_links(
    umm: Mapping[str, Any], granule: str, shared: GranuleContext
) -> list[Mapping[str, Any]]:
    related = umm.get("RelatedUrls")
    links: list[Mapping[str, Any]] = []
    names: set[str] = set()
    for link in related if isinstance(related, list) else []:
        if not isinstance(link, dict) or link.get("Type") not in shared.link_types:
            continue
        url = link.get("URL")
        if not isinstance(url, str):
            continue
        if not url.startswith(("https://", "http://")):
            # s3:// needs same-region AWS credentials; CMR lists an https link to the same file.
            shared.non_http += 1
            shared.log.debug("CMR: granule %s: skipping non-HTTP link %s", granule, url)
            continue
        if shared.token is not None and not secure_transport(url):
            # Fetched all the same (an http link may redirect to https, where the token
            # goes again), but the plain-http request itself never carries the token.
            shared.plain_http += 1
            shared.log.debug("CMR: granule %s: %s is plain http: no token there", granule, url)
        name = file_name(url)
        if not name or name in names:
            shared.log.debug("CMR: granule %s: skipping %s (no new file name)", granule, url)
            continue
        names.add(name)
        links.append(link)
    return links


def _granule_provenance(
    meta: Mapping[str, Any], umm: Mapping[str, Any], shared: GranuleContext
) -> dict[str, Any]:
    fields = {
        "concept_id": meta.get("concept-id"),
        "collection_concept_id": meta.get("collection-concept-id"),
        "native_id": meta.get("native-id"),
        "granule_ur": umm.get("GranuleUR"),
        "producer_granule_id": _producer_id(umm),
        "provider_id": meta.get("provider-id"),
        "revision_id": meta.get("revision-id"),
        "revision_date": meta.get("revision-date"),
    }
    provenance: dict[str, Any] = {
        "provider": PROVIDER,
        "endpoint": shared.endpoint,
        "query": shared.query,
        **{k: v for k, v in fields.items() if v is not None},
    }
    collection = umm.get("CollectionReference")
    if isinstance(collection, dict) and collection:
        provenance["collection"] = {
            k: collection[k] for k in ("ShortName", "Version", "EntryTitle") if k in collection
        }
    temporal = umm.get("TemporalExtent")
    if isinstance(temporal, dict) and temporal:
        provenance["temporal_extent"] = temporal
    if doi := _doi(umm):
        provenance["doi"] = doi
    return provenance


def _producer_id(umm: Mapping[str, Any]) -> str | None:
    granule = umm.get("DataGranule")
    identifiers = granule.get("Identifiers") if isinstance(granule, dict) else None
    for ident in identifiers if isinstance(identifiers, list) else []:
        if isinstance(ident, dict) and ident.get("IdentifierType") == "ProducerGranuleId":
            value = ident.get("Identifier")
            return value if isinstance(value, str) else None
    return None


def _doi(umm: Mapping[str, Any]) -> str | None:
    related = umm.get("RelatedUrls")
    for link in related if isinstance(related, list) else []:
        url = link.get("URL") if isinstance(link, dict) else None
        match = _DOI.match(url) if isinstance(url, str) else None
        if match:
            return match.group(1)
    return None


def _query(config: CmrConfig) -> dict[str, Any]:
    """The search as provenance: every constraint that was set, nothing secret."""
    query: dict[str, Any] = {}
    for name in ("short_name", "version", "provider", "concept_id", "collection_concept_id"):
        value = getattr(config, name)
        if value:
            query[name] = value
    if config.temporal:
        start, end = config.temporal
        query["temporal"] = [_instant(start, end=False), _instant(end, end=True)]
    if config.bounding_box:
        query["bounding_box"] = list(config.bounding_box)
    if config.max_granules is not None:
        query["max_granules"] = config.max_granules
    return query


# -- the plan -----------------------------------------------------------------------------


async def plan(config: CmrConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    endpoint = f"{(config.base_url or DEFAULT_BASE_URL).rstrip('/')}/granules.umm_json"
    token = await edl_token(config, ctx)
    token_host = urlsplit(config.token_url).hostname
    # Asking for no more than max_granules keeps a small search to one small page.
    page_size = min(config.page_size, config.max_granules or MAX_PAGE_SIZE)
    search = _Search(
        endpoint,
        search_params(config, page_size),
        page_size,
        config.max_granules,
        token,
        send_token=bool(token and config.search_with_token),
    )
    shared = GranuleContext(
        endpoint,
        _query(config),
        tuple(config.link_types),
        ctx.log,
        token,
        frozenset({token_host} if token_host else ()),
    )
    files = 0
    async for item in search.granules(ctx):
        for asset in granule_assets(item, shared):
            files += 1
            yield asset
    ctx.log.info(
        "CMR: granules: %d, search pages: %d, files to fetch: %d", search.seen, search.pages, files
    )
    if shared.non_http:
        ctx.log.info(
            "CMR: skipped %d non-HTTP (s3://) links; the engine fetches over HTTPS",
            shared.non_http,
        )
    if shared.plain_http:
        ctx.log.warning(
            "CMR: %d data links are plain http: the Earthdata token is not sent over http, "
            "so a protected file there fails unless the server redirects to https",
            shared.plain_http,
        )
    if shared.no_links:
        ctx.log.info(
            "CMR: %d granules had no %s link", shared.no_links, " / ".join(shared.link_types)
        )


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [
        SourceType(
            "nasa.cmr",
            CmrConfig,
            plan,
            "NASA Earthdata CMR granule search; data files fetched with an EDL token",
        )
    ]
