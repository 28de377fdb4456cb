"""The engine's one HTTP client, behind per-host budgets and the retry policy."""

from __future__ import annotations

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
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=None),
        transport=ShardedTransport(max_connections),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=True,
    )


def check_status(response: httpx.Response, what: str) -> None:
    """Raise for statuses that are not a body: retryable ones and permanent ones."""
    status = response.status_code
    if status < 400 or status == 304:
        return
    message = f"HTTP {status} {response.reason_phrase} for {what}"
    if status in RETRY_STATUSES or status >= 500:
        raise RetryableError(message, parse_retry_after(response.headers.get("Retry-After")))
    raise HTTPStatusError(message, status)


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
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """One attempt, streamed; raises RetryableError / HTTPStatusError for error statuses.

        The host's connection slot is held until the body is closed.
        """
        async with self.budgets.for_url(url).slot() as slot:
            if limiter is not None:
                await limiter.acquire()
            request = self.client.build_request(
                method, url, extensions={SLOT_EXTENSION: slot}, **kwargs
            )
            response = await self.client.send(request, stream=True, auth=auth)
            try:
                check_status(response, what or redact_url(url))
                yield response
            finally:
                await response.aclose()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A whole small response (an index, a job status), retried under the policy.

        Takes ``limiter`` and ``auth`` besides httpx's request arguments (``params``,
        ``headers``, ``data``, ``json``…). Error statuses raise ``HTTPStatusError`` (or
        ``RetryableError`` once retries are spent); read ``.status_code`` on either.
        """
        what = redact_url(url)
        async for attempt in self.retry.attempts(what):
            with attempt:
                async with self.stream(method, url, what=what, **kwargs) as response:
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
        headers = dict(asset.headers)
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


def _secret_param(name: str) -> bool:
    name = name.lower()
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


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
