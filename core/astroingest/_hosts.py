"""Per-host politeness: a connection cap and a request rate shared by every source on a host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class HostLimit:
    """At most ``connections`` requests in flight and ``rate`` requests per second to ``host``.

    ``rate = None`` means no rate limit beyond the connection cap.
    """

    host: str
    connections: int
    rate: float | None = None


class RateLimiter:
    """Spaces acquisitions ``1 / rate`` seconds apart (a token bucket holding one token).

    A burst of one keeps us strictly within an archive's published requests/s even
    when many tasks start at once.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class HostBudget:
    """Numbered connection slots (so a slot can keep its own connection) and a rate."""

    def __init__(self, limit: HostLimit) -> None:
        self.limit = limit
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(limit.connections):
            self._free.put_nowait(slot)
        self._rate = RateLimiter(limit.rate) if limit.rate else None
        self._not_before = 0.0

    def pause(self, seconds: float) -> None:
        """The host asked for a break (Retry-After): no request to it starts before then."""
        until = asyncio.get_running_loop().time() + seconds
        self._not_before = max(self._not_before, until)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        slot = await self._free.get()
        try:
            if self._rate is not None:
                await self._rate.acquire()
            # A loop, not one sleep: another Retry-After may push the deadline meanwhile.
            while (wait := self._not_before - asyncio.get_running_loop().time()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            yield slot
        finally:
            self._free.put_nowait(slot)


class HostBudgets:
    """One budget per host, made on first use from the most specific limit known."""

    def __init__(
        self,
        default: HostLimit,
        limits: Iterable[HostLimit] = (),
        user_hosts: Iterable[str] = (),
    ) -> None:
        self.default = default
        self.limits: dict[str, HostLimit] = {}
        for limit in limits:
            self.limits[limit.host.lower()] = limit
        self.user_hosts = {h.lower() for h in user_hosts}
        self._budgets: dict[str, HostBudget] = {}

    def prefer(self, limit: HostLimit) -> None:
        """A plugin's limit for this run (NCBI with an API key), unless the user set one.

        Call it before the first request to that host.
        """
        host = limit.host.lower()
        if host not in self.user_hosts:
            self.limits[host] = limit
            self._budgets.pop(host, None)

    def for_url(self, url: str) -> HostBudget:
        host = (urlsplit(url).hostname or "").lower()
        budget = self._budgets.get(host)
        if budget is None:
            limit = self.limits.get(host) or HostLimit(
                host, self.default.connections, self.default.rate
            )
            budget = self._budgets[host] = HostBudget(limit)
        return budget


@dataclass(frozen=True, slots=True)
class HostOverride:
    """A user's ``[hosts."…"]`` table: what it leaves out keeps the plugin's or default value."""

    host: str
    connections: int | None = None
    rate: float | None = None


def merge_limits(
    plugin_limits: Iterable[HostLimit],
    overrides: Mapping[str, HostOverride],
    default: HostLimit | None = None,
) -> list[HostLimit]:
    """Plugins' defaults (the strictest wins on a tie of host), then the user's, field by field."""
    merged: dict[str, HostLimit] = {}
    for limit in plugin_limits:
        host = limit.host.lower()
        seen = merged.get(host)
        merged[host] = limit if seen is None else _stricter(seen, limit)
    fallback = default or HostLimit("*", 8)
    for name, override in overrides.items():
        host = name.lower()
        base = merged.get(host) or HostLimit(host, fallback.connections, fallback.rate)
        merged[host] = HostLimit(
            host,
            override.connections if override.connections is not None else base.connections,
            override.rate if override.rate is not None else base.rate,
        )
    return list(merged.values())


def _stricter(a: HostLimit, b: HostLimit) -> HostLimit:
    rates = [r for r in (a.rate, b.rate) if r]
    return HostLimit(a.host, min(a.connections, b.connections), min(rates) if rates else None)
