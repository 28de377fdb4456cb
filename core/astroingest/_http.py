"""The engine's one HTTP client, behind per-host budgets and the retry policy."""

from __future__ import annotations

import http.cookiejar
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from astroingest._assets import Asset, Conditions, Download
from astroingest._exceptions import HTTPStatusError, RetryableError
from astroingest._hosts import HostBudgets, RateLimiter
from astroingest._retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from astroingest._transport import SLOT_EXTENSION, ShardedTransport
from astroingest._version import __version__

USER_AGENT = f"astroingest/{__version__} (+https://github.com/astroingest/astroingest)"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 30.0
    read: float = 60.0  # per read: a stalled body fails after this long without a byte


def make_client(timeouts: Timeouts, max_connections: int) -> httpx.AsyncClient:
    # One client serves every source: a shared cookie jar would carry one archive's session
    # into another source's requests. Plugins that need a session send the cookie themselves.
    no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    # Behind a proxy (HTTPS_PROXY & co., NO_PROXY honoured) httpx's own transport routes
    # requests; a custom transport would silently bypass the proxy settings.
    proxied = bool(urllib.request.getproxies())
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        cookies=no_cookies,
        timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=None),
        transport=None if proxied else ShardedTransport(max_connections),
        limits=limits,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,  # PoliteClient follows them, hop by hop, within budgets
    )


ERROR_BODY_LIMIT = 64 * 1024
MAX_REDIRECTS = 10


def check_status(response: httpx.Response, what: str, body: bytes = b"") -> None:
    """Raise for statuses that are not a body: retryable ones and permanent ones."""
    status = response.status_code
    if status < 400 or status == 304:
        return
    message = f"HTTP {status} {response.reason_phrase} for {what}"
    if status in RETRY_STATUSES or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise RetryableError(message, retry_after, status_code=status, body=body)
    raise HTTPStatusError(message, status, body)


async def _error_body(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_LIMIT:
            break
    return body[:ERROR_BODY_LIMIT]


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class PoliteClient:
    """What plugins get to talk HTTP with: every request waits for its host's budget."""

    def __init__(self, client: httpx.AsyncClient, budgets: HostBudgets, retry: RetryPolicy) -> None:
        self.client = client
        self.budgets = budgets
        self.retry = retry

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        what: str | None = None,
        limiter: RateLimiter | None = None,
        auth: httpx.Auth | None = None,
        follow_redirects: bool = True,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """One attempt, streamed; raises RetryableError / HTTPStatusError for error statuses.

        Redirects are followed here, each hop within its own host's budget. Headers the
        caller set (an API token) are not carried to another origin, and neither is
        Authorization (as httpx does); an ``auth`` flow runs again on every hop and
        decides for itself. The final host's slot is held until the body is closed.
        """
        if limiter is not None:
            await limiter.acquire()
        request = self.client.build_request(method, url, **kwargs)
        private = {name.lower() for name in (kwargs.get("headers") or {})}
        origin = request.url
        # Cookies live for one redirect chain (a login hop sets one the next hop needs),
        # never beyond it: the client itself keeps none.
        chain = httpx.Cookies()
        for _ in range(MAX_REDIRECTS + 1):
            async with self.budgets.for_url(str(request.url)).slot() as slot:
                request.extensions = {**request.extensions, SLOT_EXTENSION: slot}
                response = await self.client.send(
                    request, stream=True, auth=auth, follow_redirects=False
                )
                chain.extract_cookies(response)
                try:
                    if response.next_request is None or not follow_redirects:
                        if response.status_code >= 400:
                            body = await _error_body(response)
                            try:
                                check_status(response, what or redact_url(url), body)
                            except RetryableError as error:
                                if error.retry_after:  # the whole host asked for a break
                                    self.budgets.for_url(str(request.url)).pause(error.retry_after)
                                raise
                        yield response
                        return
                    request = response.next_request
                finally:
                    await response.aclose()
            if not _same_origin(request.url, origin):
                for name in private:
                    request.headers.pop(name, None)
            request.headers.pop("Cookie", None)
            chain.set_cookie_header(request)
        raise HTTPStatusError(
            f"more than {MAX_REDIRECTS} redirects for {what or redact_url(url)}", 310
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        retry: bool = True,
        follow_redirects: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """A whole small response (an index, a job status), retried under the policy.

        Takes ``limiter`` and ``auth`` besides httpx's request arguments (``params``,
        ``headers``, ``data``, ``json``…). Error statuses raise ``HTTPStatusError`` (or
        ``RetryableError`` once retries are spent); read ``.status_code`` and ``.body``.
        ``retry=False`` makes one attempt (a job submission must not be sent twice);
        ``follow_redirects=False`` returns a 3xx as it is (read its Location).
        """
        what = redact_url(url)
        stream_kwargs = {"what": what, "follow_redirects": follow_redirects, **kwargs}
        if not retry:
            async with self.stream(method, url, **stream_kwargs) as response:
                await response.aread()
                return response
        async for attempt in self.retry.attempts(what):
            with attempt:
                async with self.stream(method, url, **stream_kwargs) as response:
                    await response.aread()
                    return response
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    @asynccontextmanager
    async def open_asset(
        self, asset: Asset, conditions: Conditions, limiter: RateLimiter | None = None
    ) -> AsyncIterator[Download]:
        """The default opener: a conditional GET."""
        # The object as the archive holds it: a .gz served with Content-Encoding: gzip
        # must land as the .gz, and Content-Length then counts the bytes we store.
        headers = {"Accept-Encoding": "identity", **asset.headers}
        if conditions.etag:
            headers["If-None-Match"] = conditions.etag
        if conditions.last_modified:
            headers["If-Modified-Since"] = conditions.last_modified
        what = redact_url(asset.url)
        async with self.stream(
            "GET", asset.url, what=what, limiter=limiter, auth=asset.auth, headers=headers
        ) as r:
            length = r.headers.get("Content-Length")
            yield Download(
                chunks=None if r.status_code == 304 else r.aiter_bytes(),
                not_modified=r.status_code == 304,
                etag=r.headers.get("ETag"),
                last_modified=r.headers.get("Last-Modified"),
                content_length=int(length) if length and length.isdigit() else None,
                media_type=r.headers.get("Content-Type"),
                raw_bytes=lambda: r.num_bytes_downloaded,
            )


_SECRET_NAMES = frozenset(
    {
        "key",
        "apikey",
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "sig",
        "signature",
        "auth",
        "authorization",
        "credential",
        "session",
        "sessionid",
        "jsessionid",
        "code",
    }
)
_SECRET_SUFFIXES = (
    "_key",
    "-key",
    "_token",
    "-token",
    "_secret",
    "_password",
    "-signature",
    "-credential",
    "-security-token",
)


_NOT_SECRET = frozenset({"query_key"})  # NCBI's history handle


def _secret_param(name: str) -> bool:
    name = name.lower()
    return name not in _NOT_SECRET and (name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES))


def redact_url(url: str) -> str:
    """The URL without user:password and without query values that look like secrets."""
    if "@" not in url and "?" not in url:
        return url  # nothing to hide; skips a parse per asset on the hot path
    parts = httpx.URL(url)
    if parts.userinfo:
        parts = parts.copy_with(username=None, password=None)
    params = [(k, "REDACTED" if _secret_param(k) else v) for k, v in parts.params.multi_items()]
    if params:
        parts = parts.copy_with(params=params)
    return str(parts)
