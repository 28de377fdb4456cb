"""The Dask executor: plan here, transfer on a Dask cluster's workers, record here.

The engine plans every source in this process as it always does. Each planned asset
becomes one Dask task (``worker.run_transfer``) carrying the ledger's record of it;
the task's result and the ledger records it would have written come back here, into
the run's one ledger and one report.

Assets whose ``opener`` is a function (archive-specific download protocols) or whose
``auth`` is an ``httpx.Auth`` flow (tokens refreshed with this process's state) cannot
travel: they are fetched here, as with the local executor, under the same cluster-wide
host budgets. ``headers`` are plain data and travel with the asset.

A worker that dies mid-transfer loses nothing: the scheduler runs the task again on
another worker (``distributed.scheduler.allowed-failures`` times, then the asset fails),
the dead writer's temp file never becomes an object, and the rerun lands it once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster

from astroingest._assets import Asset
from astroingest._config import Source
from astroingest._engine import Engine, _Fetcher
from astroingest._exceptions import ConfigError, UnsafeKeyError
from astroingest._executors.leases import ClusterBudgets, ClusterRate, Leases, source_rate
from astroingest._executors.worker import Outcome, Setup, Transfer, run_transfer
from astroingest._hosts import HostBudgets
from astroingest._http import redact_url
from astroingest._keys import sanitize_key
from astroingest._report import AssetResult
from astroingest._retry import describe
from astroingest._sources import PlanContext

log = logging.getLogger("astroingest")

TASK_RETRIES = 2  # a task that raised (not a dead worker: the scheduler reruns those anyway)


class DaskExecutor:
    """``--executor dask``: transfers run as tasks on the cluster at ``scheduler``.

    Without a scheduler address, a ``LocalCluster`` of one worker process per CPU is
    started for the run, with enough threads (task slots) between them for
    ``concurrency`` transfers.
    """

    def __init__(
        self, scheduler: str | None, *, entry_points: bool = True, concurrency: int = 16
    ) -> None:
        self.scheduler = scheduler
        self.entry_points = entry_points
        self.concurrency = concurrency
        self._client: Any = None  # a Client, asynchronous, during a session
        self._leases: Leases | None = None
        self._engine: Engine | None = None
        self._setup: Setup | None = None

    @asynccontextmanager
    async def session(self, budgets: HostBudgets) -> AsyncIterator[HostBudgets]:
        self._engine = self._setup = None
        async with AsyncExitStack() as stack:
            client = await self._connect(stack)
            self._client = client
            self._leases = Leases(client.scheduler, client.loop)
            try:
                yield ClusterBudgets(budgets, self._leases)
            finally:
                self._client = None
                await self._sweep()

    async def _connect(self, stack: AsyncExitStack) -> Any:  # an asynchronous Client
        address: Any = self.scheduler
        where = self.scheduler or "a new local cluster"
        try:
            if address is None:
                address = await stack.enter_async_context(self._local_cluster())
            client: Any = await stack.enter_async_context(
                Client(address, asynchronous=True, set_as_default=False)  # type: ignore[no-untyped-call]
            )
            # As long as reaching the scheduler may take (distributed.comm.timeouts.connect).
            await client.wait_for_workers(1, timeout=_connect_timeout())
        except (OSError, TimeoutError, ValueError) as error:
            raise ConfigError(
                f"--executor dask: cannot use the Dask cluster at {where}: {describe(error)}"
            ) from None
        log.info("dask: transfers run on the workers of %s", client.scheduler.address)
        return client

    def _local_cluster(self) -> LocalCluster:
        workers = os.cpu_count() or 1
        return LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=max(1, math.ceil(self.concurrency / workers)),
            processes=True,
            dashboard_address=None,
            asynchronous=True,
        )

    async def fetch(
        self, fetcher: _Fetcher, source: Source, asset: Asset, ctx: PlanContext, seen: set[str]
    ) -> AssetResult:
        """Fetch and land ``asset`` on a worker; its ledger records land in the run's ledger."""
        try:
            key = sanitize_key(asset.key)
        except UnsafeKeyError:
            key = None
        if key is None or key in seen or not _can_travel(asset):
            # Here: what cannot travel, and what fails before any transfer (the engine says why).
            return await fetcher._fetch(source, asset, ctx, seen)
        seen.add(key)
        self._share_source_rate(source, ctx)
        engine = fetcher.engine
        try:
            prior = await fetcher.ledger.get(source.name, key)
            result, records = await self._remote(fetcher, source, asset, prior)
            for record in records:
                await fetcher.ledger.put(record)
        except Exception as error:
            url = engine.redact(redact_url(asset.url))
            message = engine.redact(f"dask: {describe(error)}")
            return AssetResult(source.name, asset.key, url, "failed", error=message)
        if result.status == "stored" and result.size:
            engine.progress.transferred(result.size)
        return result

    async def _remote(self, fetcher: _Fetcher, source: Source, asset: Asset, prior: Any) -> Outcome:
        assert self._client is not None and self._leases is not None, "outside a session"
        engine = fetcher.engine
        budgets = fetcher.client.budgets
        assert isinstance(budgets, ClusterBudgets)
        transfer = Transfer(
            setup=self._setup_for(engine),
            run_id=fetcher.run_id,
            source=source.name,
            min_quality=source.config.min_quality,
            rate=source.config.rate,
            asset=_portable(asset),
            prior=prior,
            limits=budgets.snapshot(),
            secrets=frozenset(engine.redact.secrets),
        )
        name = f"astroingest-{source.name}/{sanitize_key(asset.key)}-{secrets.token_hex(4)}"
        future = self._client.submit(
            run_transfer, transfer, key=name, pure=False, retries=TASK_RETRIES
        )
        try:
            outcome: Outcome = await future
        finally:
            future.release()
        return outcome

    def _setup_for(self, engine: Engine) -> Setup:
        if self._setup is None:
            self._engine = engine
            self._setup = Setup.of(engine.config, self.entry_points)
        return self._setup

    def _share_source_rate(self, source: Source, ctx: PlanContext) -> None:
        """From its first transfer on, a source's plan requests share its rate with the cluster."""
        rate = source.config.rate
        if rate and self._leases is not None and not isinstance(ctx.limiter, ClusterRate):
            ctx.limiter = source_rate(self._leases, source.name, rate)

    async def _sweep(self) -> None:
        """Remove what writers on workers that died left in local stores (temp files)."""
        engine, setup = self._engine, self._setup
        if engine is None or setup is None:
            return
        for url in (setup.store.raw, engine.config.quarantine_url):
            store = engine.open_store(url)
            try:
                if store.local_root() is not None and (removed := await store.recover()):
                    log.info("dask: removed %d partial objects of dead workers", removed)
            except OSError as error:
                log.warning("dask: could not clean up %s: %s", store.url, error)
            finally:
                await store.close()


def _connect_timeout() -> float:
    seconds: float = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    return seconds


def _can_travel(asset: Asset) -> bool:
    return asset.opener is None and asset.auth is None


def _portable(asset: Asset) -> Asset:
    """Plain containers only: mapping proxies and frozen views do not pickle."""
    return dataclasses.replace(
        asset,
        checksums=dict(asset.checksums),
        headers=dict(asset.headers),
        provenance=dict(asset.provenance),
    )
