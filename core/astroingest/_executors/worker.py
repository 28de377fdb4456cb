"""The worker side of the Dask executor: one asset's transfer, run as a task on a worker.

A task carries what the transfer needs as plain data: the stores and defaults of the run
(``Setup``), the host limits as they stand, the asset, and the ledger's record of it that
the client looked up. The worker runs the engine's own fetch (retries, conditional
request, streaming checks, validation, atomic landing, quarantine) on its event loop,
inside an engine built once per worker process and setup, with its own HTTP client and
stores. It answers the ledger's questions from the record the client sent and hands
the records it would have written back with the result: the client keeps the one ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from distributed import get_worker

from astroingest._assets import Asset
from astroingest._config import Config, Defaults, Source, StoreSettings
from astroingest._engine import Engine, _Fetcher
from astroingest._executors.leases import ClusterBudgets, ClusterRate, Leases, source_rate
from astroingest._hosts import HostBudgets, HostLimit
from astroingest._http import PoliteClient, make_client
from astroingest._ledger import Ledger, LedgerRecord
from astroingest._plugins import load_host
from astroingest._redact import RedactingFilter, Redactor
from astroingest._report import AssetResult
from astroingest._sources import PlanContext, SourceConfig, SourceType
from astroingest.stores._base import Store

log = logging.getLogger("astroingest")


@dataclass(frozen=True, slots=True)
class Setup:
    """What every transfer of a run shares; workers build one engine per distinct setup."""

    config_path: Path
    store: StoreSettings
    defaults: Defaults
    entry_points: bool
    digest: str = ""

    @classmethod
    def of(cls, config: Config, entry_points: bool) -> Setup:
        text = json.dumps(
            [config.store.model_dump(), config.defaults.model_dump(), entry_points],
            sort_keys=True,
        )
        digest = hashlib.sha256(text.encode()).hexdigest()
        return cls(config.path, config.store, config.defaults, entry_points, digest)


@dataclass(frozen=True, slots=True)
class Transfer:
    """One asset to fetch and land on a worker."""

    setup: Setup
    run_id: str
    source: str
    min_quality: float | None
    rate: float | None  # the source's own requests/s
    asset: Asset
    prior: LedgerRecord | None
    limits: tuple[HostLimit, tuple[HostLimit, ...]]  # default, then per host
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)


Outcome = tuple[AssetResult, tuple[LedgerRecord, ...]]


async def run_transfer(transfer: Transfer) -> Outcome:
    """The task: fetch and land ``transfer.asset`` here; return its result and ledger records."""
    state = await _state_for(transfer.setup)
    return await state.run(transfer)


class _TaskLedger(Ledger):
    """The ledger as one task sees it: the client's record in, the task's records out.

    The engine's fetch only asks ``get`` and ``put``; there is no database here.
    """

    def __init__(self, prior: LedgerRecord | None) -> None:  # no super(): nothing to open
        self.prior = prior
        self.written: list[LedgerRecord] = []

    async def get(self, source: str, key: str) -> LedgerRecord | None:
        prior = self.prior
        return prior if prior is not None and (prior.source, prior.key) == (source, key) else None

    async def put(self, record: LedgerRecord) -> None:
        self.written.append(record)


class _Quiet:
    """Progress is shown by the client, from the results."""

    def planned(self, count: int = 1) -> None:
        pass

    def transferred(self, nbytes: int) -> None:
        pass

    def finished(self, result: AssetResult) -> None:
        pass

    def close(self) -> None:
        pass


async def _no_plan(config: SourceConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    """Workers never plan: the client did."""
    return
    yield


class _WorkerState:
    """One engine, HTTP client and pair of stores per worker process and setup."""

    def __init__(self, setup: Setup) -> None:
        worker = get_worker()
        self.leases = Leases(worker.scheduler, worker.loop)
        self.redactor = Redactor()
        log.addFilter(RedactingFilter(self.redactor))
        host = load_host(entry_points=setup.entry_points)
        config = Config(setup.config_path, setup.store, setup.defaults, {}, {})
        self.engine = Engine(config, host, _Quiet(), self.redactor)
        self.http = make_client(self.engine.timeouts, setup.defaults.concurrency * 2)
        self.raw: Store = self.engine.open_store(setup.store.raw)
        self.quarantine: Store = self.engine.open_store(config.quarantine_url)
        self._clients: dict[object, PoliteClient] = {}
        self._rates: dict[tuple[str, float], ClusterRate] = {}

    async def run(self, transfer: Transfer) -> Outcome:
        if not transfer.secrets <= self.redactor.secrets:
            self.redactor.add(transfer.secrets)
        client = self._client(transfer.limits)
        ledger = _TaskLedger(transfer.prior)
        fetcher = _Fetcher(self.engine, client, self.raw, self.quarantine, ledger, transfer.run_id)
        config = SourceConfig(plugin="-", min_quality=transfer.min_quality, rate=transfer.rate)
        source = Source(transfer.source, SourceType("-", SourceConfig, _no_plan), config)
        limiter = None
        if transfer.rate:
            limiter = self._rate(transfer.source, transfer.rate)
        ctx = PlanContext(transfer.source, client, Path("."), log, limiter)
        result = await fetcher._fetch(source, transfer.asset, ctx, set())
        return result, tuple(ledger.written)

    def _client(self, limits: tuple[HostLimit, tuple[HostLimit, ...]]) -> PoliteClient:
        client = self._clients.get(limits)
        if client is None:
            default, hosts = limits
            budgets = ClusterBudgets(HostBudgets(default, hosts), self.leases)
            client = self._clients[limits] = PoliteClient(self.http, budgets, self.engine.retry)
        return client

    def _rate(self, source: str, rate: float) -> ClusterRate:
        limiter = self._rates.get((source, rate))
        if limiter is None:
            limiter = self._rates[source, rate] = source_rate(self.leases, source, rate)
        return limiter


# Per worker process; tasks run on the worker's one event loop, so no lock is needed.
_states: dict[str, _WorkerState] = {}


async def _state_for(setup: Setup) -> _WorkerState:
    state = _states.get(setup.digest)
    if state is None:
        state = _states[setup.digest] = _WorkerState(setup)
    return state
