"""Per-host politeness across a Dask cluster: the scheduler hands out the connections and the rate.

Every request of a run, wherever it starts (planning on the client, transfers on any
worker, each redirect hop against its own host), takes a lease of a ``distributed.Semaphore``
named after its host, so a host never sees more than its ``connections`` at once from the
whole cluster. A host with a requests/s ``rate`` also has a one-lease semaphore that a
request takes as it starts and gives back ``1 / rate`` seconds later: one token bucket of
size one for the whole cluster, as the local engine's ``RateLimiter`` is for one process.

A process that dies holding a lease (a killed worker) keeps it until the scheduler's
``distributed.scheduler.locks.lease-timeout`` (30 s by default) runs out: the cluster
is briefly more polite than it needs to be, never less.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from distributed import Semaphore

from astroingest._hosts import HostBudget, HostBudgets, HostLimit, RateLimiter


class Leases:
    """The named semaphores one process uses, each made once, talking to one scheduler."""

    def __init__(self, scheduler_rpc: Any, loop: Any) -> None:
        self._scheduler = scheduler_rpc
        self._loop = loop
        self._made: dict[str, Semaphore] = {}

    def semaphore(self, name: str, max_leases: int) -> Semaphore:
        # The scheduler refuses one name with two sizes, so the size is part of the name.
        full = f"astroingest:{name}:{max_leases}"
        made = self._made.get(full)
        if made is None:
            made = Semaphore(  # type: ignore[no-untyped-call]
                max_leases, full, scheduler_rpc=self._scheduler, loop=self._loop
            )
            self._made[full] = made
        return made


async def take(semaphore: Semaphore) -> None:
    """Acquire a lease; a cancelled wait gives back a lease the scheduler granted meanwhile."""
    acquiring = asyncio.ensure_future(semaphore.acquire())  # type: ignore[no-untyped-call]
    try:
        await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        acquiring.add_done_callback(lambda done: _give_back_if_granted(semaphore, done))
        raise


def _give_back_if_granted(semaphore: Semaphore, done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is None and done.result():
        give_back(semaphore)


_returning: set[asyncio.Task[Any]] = set()


def give_back(semaphore: Semaphore) -> None:
    """Release a lease without waiting for the scheduler (and whatever cancels the caller)."""
    task = asyncio.ensure_future(semaphore.release())  # type: ignore[no-untyped-call]
    _returning.add(task)
    task.add_done_callback(_returning.discard)


class ClusterRate(RateLimiter):
    """``rate`` requests/s cluster-wide: one token, kept ``1 / rate`` s by whoever takes it."""

    def __init__(self, rate: float, token: Semaphore) -> None:
        super().__init__(rate)
        self.token = token

    async def acquire(self) -> None:
        await super().acquire()  # this process alone never asks faster than the rate
        await take(self.token)
        asyncio.get_running_loop().call_later(self.interval, give_back, self.token)


class LeasedBudget(HostBudget):
    """A host's budget in this process, each request also holding a cluster-wide lease."""

    def __init__(self, limit: HostLimit, leases: Leases) -> None:
        # The local budget keeps the cap and Retry-After pauses; the rate is the cluster's.
        super().__init__(HostLimit(limit.host, limit.connections))
        self.limit = limit
        self.connections = leases.semaphore(f"connections:{limit.host}", limit.connections)
        self.rate = (
            ClusterRate(limit.rate, leases.semaphore(f"rate:{limit.host}:{limit.rate:g}", 1))
            if limit.rate
            else None
        )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        async with super().slot() as slot:
            await take(self.connections)
            try:
                # The token last, so that the request leaves as soon as it has it.
                if self.rate is not None:
                    await self.rate.acquire()
                yield slot
            finally:
                give_back(self.connections)


class ClusterBudgets(HostBudgets):
    """``budgets`` (same limits, same user overrides) with every host's budget leased."""

    def __init__(self, budgets: HostBudgets, leases: Leases) -> None:
        super().__init__(budgets.default, budgets.limits.values(), budgets.user_hosts)
        self.leases = leases

    def for_url(self, url: str) -> HostBudget:
        host = (urlsplit(url).hostname or "").lower()
        budget = self._budgets.get(host)
        if budget is None:
            limit = self.limits.get(host) or HostLimit(
                host, self.default.connections, self.default.rate
            )
            budget = self._budgets[host] = LeasedBudget(limit, self.leases)
        return budget

    def snapshot(self) -> tuple[HostLimit, tuple[HostLimit, ...]]:
        """The limits as they stand (a plugin may have preferred one while planning)."""
        return self.default, tuple(self.limits.values())


def source_rate(leases: Leases, source: str, rate: float) -> ClusterRate:
    """A source's own ``rate``, shared by its plan requests and its transfers cluster-wide."""
    return ClusterRate(rate, leases.semaphore(f"source:{source}:{rate:g}", 1))
