"""The run: plan every source, fetch politely and concurrently, verify, validate, land, record."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from astroingest import _schedule, _version
from astroingest._assets import Asset, Conditions, Download
from astroingest._budget import Ticket, budget_for
from astroingest._checksums import Digests
from astroingest._config import Config, Source
from astroingest._exceptions import ConfigError, FetchError, IntegrityError, StoreError
from astroingest._hosts import HostBudgets, HostLimit, RateLimiter, merge_limits
from astroingest._http import PoliteClient, Timeouts, make_client, redact_url
from astroingest._keys import sanitize_key
from astroingest._ledger import Ledger, LedgerRecord
from astroingest._ledger_sync import open_ledger, push_ledger
from astroingest._plugins import Host
from astroingest._progress import ProgressSink
from astroingest._redact import Redactor
from astroingest._report import AssetResult, RunReport, new_run_id, now_iso
from astroingest._retry import RetryPolicy, describe
from astroingest._sources import PlanContext
from astroingest.stores._base import ObjectWriter, Store
from astroingest.stores.local import path_from_url
from astroingest.validation import QualityReport, choose

log = logging.getLogger("astroingest")


@dataclass(frozen=True, slots=True)
class RunOptions:
    only: Sequence[str] = ()
    dry_run: bool = False


class Executor(Protocol):
    """Where transfers run when not on the engine's own loop (``--executor dask``)."""

    def session(self, budgets: HostBudgets) -> AbstractAsyncContextManager[HostBudgets]:
        """Held around a run that fetches; yields the budgets all its requests must use."""
        ...

    async def fetch(
        self, fetcher: _Fetcher, source: Source, asset: Asset, ctx: PlanContext, seen: set[str]
    ) -> AssetResult:
        """What ``_Fetcher._fetch`` does, elsewhere; ledger records go to ``fetcher.ledger``."""
        ...


@dataclass(slots=True)
class _Landed:
    sha256: str
    size: int
    quality: QualityReport


class _Unchanged(Exception):
    """Raised inside an attempt when the body equals what is already stored."""


def select_sources(config: Config, only: Sequence[str]) -> list[Source]:
    unknown = [name for name in only if name not in config.sources]
    if unknown:
        known = ", ".join(config.sources) or "none"
        raise ConfigError(
            f"{config.path.name}: --only {unknown[0]}: no such source (known: {known})"
        )
    disabled = [name for name in only if not config.sources[name].config.enabled]
    if disabled:
        raise ConfigError(
            f"{config.path.name}: --only {disabled[0]}: the source is disabled "
            "(set enabled = true in its table, with the variables it names)"
        )
    chosen = [config.sources[name] for name in only] if only else list(config.sources.values())
    return [s for s in chosen if s.config.enabled]


class Engine:
    def __init__(
        self,
        config: Config,
        host: Host,
        progress: ProgressSink,
        redactor: Redactor,
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.progress = progress
        self.redact = redactor
        self.executor = executor
        defaults = config.defaults
        self.retry = RetryPolicy(defaults.retries, defaults.backoff, defaults.max_backoff)
        self.timeouts = Timeouts(defaults.connect_timeout, defaults.read_timeout)

    def open_store(self, url: str) -> Store:
        scheme = url.split("://", 1)[0]
        defaults = self.config.defaults
        options = {
            **self.config.store.connection_options(),
            "retries": defaults.retries,
            "backoff": defaults.backoff,
            "max_backoff": defaults.max_backoff,
        }
        return self.host.stores()[scheme].open(url, options)

    async def run(self, options: RunOptions) -> RunReport:
        sources = select_sources(self.config, options.only)
        report = RunReport(
            new_run_id(), now_iso(), str(self.config.path), version=_version.__version__
        )
        default = HostLimit(
            "*", self.config.defaults.host_connections, self.config.defaults.host_rate
        )
        budgets = HostBudgets(
            default,
            merge_limits(self.host.host_limits(), self.config.hosts, default),
            user_hosts=self.config.hosts,
        )
        async with (
            self._session(budgets, options) as budgets,
            make_client(self.timeouts, self.config.defaults.concurrency * 2) as client,
        ):
            polite = PoliteClient(client, budgets, self.retry)
            if options.dry_run:
                await self._plan_only(sources, polite, report)
                report.finish("dry-run")
                return report
            await self._run(sources, polite, report)
        return report

    def _session(
        self, budgets: HostBudgets, options: RunOptions
    ) -> AbstractAsyncContextManager[HostBudgets]:
        if self.executor is None or options.dry_run:
            return nullcontext(budgets)
        return self.executor.session(budgets)

    async def _run(self, sources: list[Source], client: PoliteClient, report: RunReport) -> None:
        raw = self.open_store(self.config.store.raw)
        quarantine = self.open_store(self.config.quarantine_url)
        logs = self.open_store(self.config.store.logs)
        try:
            ledger = await self._open_ledger(raw, quarantine, logs)
            try:
                await self._fetch(sources, client, report, raw, quarantine, ledger)
            finally:
                # Shielded: a second Ctrl-C must not leave the report half-written.
                await asyncio.shield(self._write_back(report, logs, ledger))
        finally:
            for store in (raw, quarantine, logs):
                await store.close()

    async def _open_ledger(self, raw: Store, quarantine: Store, logs: Store) -> Ledger:
        try:
            ledger = await open_ledger(logs)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot use the ledger: {error}") from None
        try:
            for store in (raw, quarantine, logs):
                store.bind_ledger(ledger)
                if removed := await store.recover():
                    log.info(
                        "removed %d partial objects left by an interrupted run in %s",
                        removed,
                        store.url,
                    )
        except (OSError, sqlite3.Error) as error:
            ledger.close()
            raise StoreError(f"cannot use the store: {error}") from None
        except BaseException:
            ledger.close()
            raise
        return ledger

    async def _fetch(
        self,
        sources: list[Source],
        client: PoliteClient,
        report: RunReport,
        raw: Store,
        quarantine: Store,
        ledger: Ledger,
    ) -> None:
        fetcher = _Fetcher(self, client, raw, quarantine, ledger, report.run_id)
        try:
            started = _schedule.now()  # the schedules' clock, for `run --due`
            await fetcher.fetch_all(sources, report)
            ran = [source.name for source in sources]
            await asyncio.to_thread(_schedule.record_successes, ledger, report, ran, started)
            report.finish("ok" if report.clean else "failed")
        except asyncio.CancelledError:
            report.finish("cancelled")
            raise
        except BaseException:
            report.finish("failed")
            raise

    async def _write_back(self, report: RunReport, logs: Store, ledger: Ledger) -> None:
        try:
            await push_ledger(logs, ledger)
        finally:
            ledger.close()
            await logs.put_bytes(f"runs/{report.run_id}.json", report.to_json().encode())

    async def _plan_only(
        self, sources: list[Source], client: PoliteClient, report: RunReport
    ) -> None:
        for source in sources:
            ctx = self._context(source, client, dry_run=True)
            try:
                async for asset in source.type.plan(source.config, ctx):
                    result = AssetResult(
                        source.name,
                        sanitize_key(asset.key),
                        self.redact(redact_url(asset.url)),
                        "planned",
                        size=asset.size,
                        sha256=asset.sha256,
                        provenance=self.provenance(asset),
                    )
                    report.assets.append(result)
                    self.progress.planned()
            except Exception as error:
                report.add(self._plan_failure(source, error))
            await self.finish_source(ctx)

    def _context(self, source: Source, client: PoliteClient, dry_run: bool = False) -> PlanContext:
        limiter = RateLimiter(source.config.rate) if source.config.rate else None
        return PlanContext(
            source.name,
            client,
            self.config.directory,
            log.getChild(source.name),
            limiter,
            dry_run=dry_run,
            secret_sink=self.redact.add,
            store_dirs=self._store_dirs(),
        )

    def _store_dirs(self) -> tuple[Path, ...]:
        store = self.config.store
        urls = (store.raw, store.cubes, store.logs, self.config.quarantine_url, store.backup)
        return tuple(path_from_url(u) for u in urls if u and u.startswith("file://"))

    async def finish_source(self, ctx: PlanContext) -> None:
        for finalizer in ctx.finalizers:
            try:
                await finalizer()
            except Exception as error:  # cleanup is best effort: the data already landed
                log.warning(
                    "source %s: cleanup failed: %s", ctx.source, self.redact(describe(error))
                )

    def provenance(self, asset: Asset) -> dict[str, Any] | None:
        if not asset.provenance:
            return None
        return {str(k): self._scrub(v) for k, v in asset.provenance.items()}

    def _scrub(self, value: Any) -> Any:
        """Secrets out of every string, structure and numbers left as they are."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {str(k): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.redact(str(value))

    def _plan_failure(self, source: Source, error: BaseException) -> AssetResult:
        message = self.redact(f"planning failed: {describe(error)}")
        log.error("source %s: %s", source.name, message)
        return AssetResult(source.name, None, None, "failed", error=message)


class _Fetcher:
    """Per-run state of the fetch phase: stores, ledger, semaphores."""

    def __init__(
        self,
        engine: Engine,
        client: PoliteClient,
        raw: Store,
        quarantine: Store,
        ledger: Ledger,
        run_id: str,
    ) -> None:
        self.engine = engine
        self.client = client
        self.raw = raw
        self.quarantine = quarantine
        self.ledger = ledger
        self.run_id = run_id
        self.slots = asyncio.Semaphore(engine.config.defaults.concurrency)
        self.validators = list(engine.host.validators().values())
        self.budget = budget_for(engine.config)

    async def fetch_all(self, sources: list[Source], report: RunReport) -> None:
        async with asyncio.TaskGroup() as group:
            for source in sources:
                group.create_task(self._source(source, report, group))

    async def _source(self, source: Source, report: RunReport, group: asyncio.TaskGroup) -> None:
        ctx = self.engine._context(source, self.client)
        own = asyncio.Semaphore(
            source.config.concurrency or self.engine.config.defaults.concurrency
        )
        seen: set[str] = set()
        tasks: list[asyncio.Task[None]] = []
        try:
            async for asset in source.type.plan(source.config, ctx):
                self.engine.progress.planned()
                await own.acquire()
                await self.slots.acquire()
                # Judged only now, with a slot in hand: what is in flight has been counted.
                ticket = await self.budget.admit(source.name, asset.size)
                if isinstance(ticket, str):
                    self.slots.release()
                    own.release()
                    self._skip(source, asset, ticket, report)
                    continue
                tasks.append(
                    group.create_task(self._one(source, asset, ctx, seen, report, own, ticket))
                )
        except Exception as error:
            result = self.engine._plan_failure(source, error)
            report.add(result)
            self.engine.progress.finished(result)
        finally:
            if ctx.finalizers:
                # Also on Ctrl-C: a job left running on an archive costs it real work.
                if tasks:
                    await asyncio.wait(tasks)
                await asyncio.shield(self.engine.finish_source(ctx))

    async def _one(
        self,
        source: Source,
        asset: Asset,
        ctx: PlanContext,
        seen: set[str],
        report: RunReport,
        own: asyncio.Semaphore,
        ticket: Ticket,
    ) -> None:
        try:
            with self.budget.tracking(ticket):
                result = await self._transfer(source, asset, ctx, seen)
        finally:
            self.slots.release()
            own.release()
        await self.budget.settle(ticket, result)
        result.provenance = self.engine.provenance(asset)
        report.add(result)
        self.engine.progress.finished(result)

    def _skip(self, source: Source, asset: Asset, reason: str, report: RunReport) -> None:
        """A budget guard keeps ``asset`` from starting: report it, fetch nothing."""
        url, key = self.engine.redact(redact_url(asset.url)), self.engine.redact(asset.key)
        result = AssetResult(source.name, key, url, "skipped", size=asset.size, error=reason)
        report.add(result)
        self.engine.progress.finished(result)

    def _transfer(
        self, source: Source, asset: Asset, ctx: PlanContext, seen: set[str]
    ) -> Awaitable[AssetResult]:
        executor = self.engine.executor
        if executor is None:
            return self._fetch(source, asset, ctx, seen)
        return executor.fetch(self, source, asset, ctx, seen)

    async def _fetch(
        self, source: Source, asset: Asset, ctx: PlanContext, seen: set[str]
    ) -> AssetResult:
        url = self.engine.redact(redact_url(asset.url))
        attempts = 0
        try:
            key = sanitize_key(asset.key)
            if key in seen:
                raise FetchError(f"two assets of source {source.name} share the key {key!r}")
            seen.add(key)
            prior = await self._prior(source, key)
            if prior is not None and _contradicts(asset, prior):
                prior = None  # the archive publishes something else now: fetch it whole
            if prior is None and asset.sha256:
                present = await self._present(source, asset, key, url)
                if present is not None:
                    return present
            conditions = Conditions(prior.etag, prior.last_modified) if prior else Conditions()
            async with asyncio.timeout(self.engine.config.defaults.asset_timeout):
                async for attempt in self.engine.retry.attempts(url):
                    with attempt:
                        attempts += 1
                        result = await self._attempt(
                            source, asset, key, url, ctx, conditions, prior
                        )
            result.attempts = attempts
            return result
        except TimeoutError:
            error = f"gave up after {self.engine.config.defaults.asset_timeout:g} s (asset_timeout)"
        except Exception as exc:
            error = describe(exc)
        return AssetResult(
            source.name,
            self.engine.redact(asset.key),  # a key may carry a secret that was in the URL
            url,
            "failed",
            attempts=attempts,
            error=self.engine.redact(error),
        )

    async def _prior(self, source: Source, key: str) -> LedgerRecord | None:
        """The ledger's record, but only while the object it describes is really still there."""
        prior = await self.ledger.get(source.name, key)
        if prior is None:
            return None
        stored = await self.raw.stat(f"{source.name}/{key}")
        return prior if stored is not None and stored.size == prior.size else None

    async def _present(
        self, source: Source, asset: Asset, key: str, url: str
    ) -> AssetResult | None:
        """The store already holds the published bytes (checked by sha256): nothing to fetch."""
        assert asset.sha256 is not None
        store_key = f"{source.name}/{key}"
        if await self.raw.object_sha256(store_key) != asset.sha256.lower():
            return None
        info = await self.raw.stat(store_key)
        if info is None:
            return None
        record = LedgerRecord(
            source.name,
            key,
            url,
            None,
            None,
            info.size,
            asset.sha256.lower(),
            now_iso(),
            self.run_id,
            _provenance_json(self.engine.provenance(asset)),
        )
        await self.ledger.put(record)
        return _unchanged(source, key, url, record)

    def _opener(
        self, asset: Asset, ctx: PlanContext
    ) -> Callable[[Asset, Conditions], AbstractAsyncContextManager[Download]]:
        if asset.opener is not None:
            return asset.opener
        return partial(self.client.open_asset, limiter=ctx.limiter)

    async def _attempt(
        self,
        source: Source,
        asset: Asset,
        key: str,
        url: str,
        ctx: PlanContext,
        conditions: Conditions,
        prior: LedgerRecord | None,
    ) -> AssetResult:
        store_key = f"{source.name}/{key}"
        async with self._opener(asset, ctx)(asset, conditions) as download:
            if download.not_modified:
                if prior is None:
                    raise FetchError("the server answered 304 Not Modified to a plain GET")
                return _unchanged(source, key, url, prior)
            try:
                async with await self.raw.open_writer(
                    store_key, size=asset.size, sha256=asset.sha256
                ) as writer:
                    landed = await self._stream(asset, download, writer)
                    return await self._land(
                        source, asset, key, url, writer, landed, download, prior
                    )
            except _Unchanged:
                assert prior is not None
                # Same bytes under a new ETag: remember the new validators, keep the object.
                await self._record(
                    source,
                    key,
                    url,
                    download,
                    prior.size,
                    prior.sha256,
                    prior.run_id,
                    self.engine.provenance(asset),
                )
                return _unchanged(source, key, url, prior)

    async def _stream(self, asset: Asset, download: Download, writer: ObjectWriter) -> _Landed:
        validator_type = choose(self.validators, asset.media_type or download.media_type, asset.key)
        validator = validator_type.factory()
        digests = Digests(asset)
        size = 0
        assert download.chunks is not None
        async for chunk in download.chunks:
            digests.update(chunk)
            validator.feed(chunk)
            await writer.write(chunk)
            size += len(chunk)
            self.engine.progress.transferred(len(chunk))
            self.budget.streamed(len(chunk))
        _check_length(asset, download, size)
        digests.verify()
        return _Landed(digests.sha256, size, validator.finish())

    async def _land(
        self,
        source: Source,
        asset: Asset,
        key: str,
        url: str,
        writer: ObjectWriter,
        landed: _Landed,
        download: Download,
        prior: LedgerRecord | None,
    ) -> AssetResult:
        quality = landed.quality
        min_quality = source.config.min_quality
        if min_quality is None:
            min_quality = self.engine.config.defaults.min_quality
        result = AssetResult(
            source.name,
            key,
            url,
            "stored",
            size=landed.size,
            sha256=landed.sha256,
            quality=quality.score,
            validator=quality.validator,
        )
        if quality.score < min_quality:
            failed = ", ".join(
                f"{c.name}" + (f" ({c.detail})" if c.detail else "") for c in quality.failed()
            )
            result.status = "quarantined"
            result.error = self.engine.redact(
                f"quality {quality.score:.2f} below {min_quality:g}: {failed or 'no detail'}"
            )
            await writer.divert(self.quarantine, f"{source.name}/{key}", landed.sha256)
            await self.quarantine.put_bytes(
                f"{source.name}/{key}.quality.json", _quality_json(result, quality)
            )
            return result
        if prior is not None and prior.sha256 == landed.sha256:
            raise _Unchanged
        await writer.commit(landed.sha256)
        await self._record(
            source,
            key,
            url,
            download,
            landed.size,
            landed.sha256,
            self.run_id,
            self.engine.provenance(asset),
        )
        return result

    async def _record(
        self,
        source: Source,
        key: str,
        url: str,
        download: Download,
        size: int,
        sha256: str,
        run_id: str,
        provenance: dict[str, Any] | None,
    ) -> None:
        record = LedgerRecord(
            source.name,
            key,
            url,
            download.etag,
            download.last_modified,
            size,
            sha256,
            now_iso(),
            run_id,
            _provenance_json(provenance),
        )
        await self.ledger.put(record)


def _provenance_json(provenance: dict[str, Any] | None) -> str | None:
    return json.dumps(provenance, sort_keys=True) if provenance else None


def _contradicts(asset: Asset, prior: LedgerRecord) -> bool:
    """The archive's published sha256 or size differs from what we stored."""
    if asset.sha256 is not None and asset.sha256.lower() != prior.sha256:
        return True
    return asset.size is not None and asset.size != prior.size


def _unchanged(source: Source, key: str, url: str, prior: LedgerRecord) -> AssetResult:
    return AssetResult(source.name, key, url, "unchanged", size=prior.size, sha256=prior.sha256)


def _check_length(asset: Asset, download: Download, size: int) -> None:
    if download.content_length is not None and download.raw_bytes is not None:
        received = download.raw_bytes()
        if received < download.content_length:
            raise IntegrityError(f"truncated body: {received} of {download.content_length} bytes")
        if received > download.content_length:
            raise IntegrityError(
                f"body grew while being read: {received} bytes, {download.content_length} expected"
            )
    if asset.size is not None and size != asset.size:
        raise IntegrityError(f"size mismatch: got {size} bytes, expected {asset.size}")


def _quality_json(result: AssetResult, quality: QualityReport) -> bytes:
    document: dict[str, Any] = {
        "source": result.source,
        "key": result.key,
        "url": result.url,
        "size": result.size,
        "sha256": result.sha256,
        "quality": quality.as_dict(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()
