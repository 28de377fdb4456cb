"""Budget guards: at most so many bytes and assets land per run and per source.

What counts is what lands in a store (stored or quarantined): an asset found unchanged
costs nothing, so a rerun over a large archive is not stopped by what it already has.
An asset whose published size would pass ``max_bytes`` is not started; bytes of an
asset of unknown size count as they stream in, and no new asset starts once the budget
is reached. Assets already in flight finish: a guard never leaves a partial object.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from astroingest._report import AssetResult

if TYPE_CHECKING:
    from astroingest._config import Config

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
GIB = 2**30  # S3 bills storage per GB-month with GB = 2**30 bytes
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object) -> object:
    """``"10 GiB"`` → 10737418240; anything but a string is left for pydantic to judge.

    Decimal units (kB, MB, GB, TB, PB) are powers of 1000, binary ones (KiB … PiB) of
    1024; a bare number is bytes. Meant as a pydantic ``mode="before"`` validator.
    """
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f'not a size: {value!r} (bytes as an integer, or e.g. "10 GiB", "500 MB")')
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower() or "b")
    if factor is None:
        raise ValueError(
            f"unknown unit {unit!r} in {value!r} (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    try:
        return int(Decimal(number) * factor)
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
        raise ValueError(f"not a size: {value!r}") from None


def format_size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{nbytes} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int | None = None
    max_assets: int | None = None

    @property
    def active(self) -> bool:
        return self.max_bytes is not None or self.max_assets is not None


@dataclass(slots=True)
class _Tally:
    """One scope's account: the run's, or one source's."""

    limits: Limits
    label: str
    landed_bytes: int = 0
    landed_assets: int = 0
    reserved_bytes: int = 0  # published sizes of assets in flight
    streamed_bytes: int = 0  # bytes so far of in-flight assets of unknown size
    in_flight: int = 0

    def fits_now(self, size: int | None) -> bool:
        assets, limit = self.limits.max_assets, self.limits.max_bytes
        if assets is not None and self.landed_assets + self.in_flight >= assets:
            return False
        if limit is None:
            return True
        committed = self.landed_bytes + self.reserved_bytes + self.streamed_bytes
        return committed + size <= limit if size is not None else committed < limit

    def could_fit(self, size: int | None) -> bool:
        """Would fit if every asset in flight turned out unchanged (so waiting may help)."""
        assets, limit = self.limits.max_assets, self.limits.max_bytes
        if assets is not None and self.landed_assets >= assets:
            return False
        if limit is None:
            return True
        return self.landed_bytes + size <= limit if size is not None else self.landed_bytes < limit

    def refusal(self, size: int | None) -> str:
        assets, limit = self.limits.max_assets, self.limits.max_bytes
        if assets is not None and self.landed_assets >= assets:
            return f"max_assets {assets} reached for {self.label}"
        assert limit is not None
        landed = format_size(self.landed_bytes)
        if size is not None and size > limit - self.landed_bytes:
            return (
                f"{format_size(size)} would pass max_bytes {format_size(limit)} "
                f"for {self.label} ({landed} landed)"
            )
        return f"max_bytes {format_size(limit)} reached for {self.label} ({landed} landed)"


@dataclass(slots=True)
class Ticket:
    """An admitted asset: what it reserved, and what it has streamed so far."""

    source: str
    size: int | None
    streamed: int = 0


# Each asset is fetched in its own task, and a task runs in its own copy of the context:
# the ticket set here is the one of the asset whose bytes are streaming in this task.
_current: ContextVar[Ticket | None] = ContextVar("astroingest_budget_ticket", default=None)


class Budget:
    """The run's guards, consulted before each asset starts and told how it ended."""

    def __init__(self, run: Limits, sources: Mapping[str, Limits]) -> None:
        self._run = _Tally(run, "the run")
        self._sources = {
            name: _Tally(limits, f"source {name}")
            for name, limits in sources.items()
            if limits.active
        }
        self._changed = asyncio.Condition()

    def _tallies(self, source: str) -> list[_Tally]:
        scoped = [self._run] if self._run.limits.active else []
        if source in self._sources:
            scoped.append(self._sources[source])
        return scoped

    async def admit(self, source: str, size: int | None) -> Ticket | str:
        """A ticket to start the asset, or the reason it is skipped.

        Waits while the answer depends on assets in flight (they may yet prove unchanged).
        """
        tallies = self._tallies(source)
        if not tallies:
            return Ticket(source, size)
        async with self._changed:
            while True:
                if all(t.fits_now(size) for t in tallies):
                    for t in tallies:
                        t.in_flight += 1
                        t.reserved_bytes += size or 0
                    return Ticket(source, size)
                for t in tallies:
                    if not t.could_fit(size):
                        return t.refusal(size)
                await self._changed.wait()

    @contextmanager
    def tracking(self, ticket: Ticket) -> Iterator[None]:
        """Count streamed bytes against ``ticket`` for the code inside (one asset's task)."""
        token = _current.set(ticket)
        try:
            yield
        finally:
            _current.reset(token)

    def streamed(self, nbytes: int) -> None:
        """Bytes of the current asset arrived; only unknown sizes need counting as they come."""
        ticket = _current.get()
        if ticket is None or ticket.size is not None:
            return
        ticket.streamed += nbytes
        for t in self._tallies(ticket.source):
            t.streamed_bytes += nbytes

    async def settle(self, ticket: Ticket, result: AssetResult) -> None:
        """The asset ended; only what reached a store (stored or quarantined) counts."""
        tallies = self._tallies(ticket.source)
        if not tallies:
            return
        landed = (result.size or 0) if result.status in ("stored", "quarantined") else None
        async with self._changed:
            for t in tallies:
                t.in_flight -= 1
                t.reserved_bytes -= ticket.size or 0
                t.streamed_bytes -= ticket.streamed
                if landed is not None:
                    t.landed_bytes += landed
                    t.landed_assets += 1
            self._changed.notify_all()


def budget_for(config: Config) -> Budget:
    """The guards ``[defaults]`` and each ``[sources.NAME]`` set."""
    run = Limits(config.defaults.max_bytes, config.defaults.max_assets)
    sources = {
        name: Limits(source.config.max_bytes, source.config.max_assets)
        for name, source in config.sources.items()
    }
    return Budget(run, sources)


def with_run_limits(config: Config, max_bytes: int | None, max_assets: int | None) -> Config:
    """``config`` with the command line's per-run guards in place of ``[defaults]``'s."""
    update = {
        name: value
        for name, value in (("max_bytes", max_bytes), ("max_assets", max_assets))
        if value is not None
    }
    if not update:
        return config
    return replace(config, defaults=config.defaults.model_copy(update=update))


def plan_notes(planned: Sequence[AssetResult], config: Config) -> list[str]:
    """What a dry run adds under its plan: the storage cost, and the guards it would meet."""
    known = sum(a.size or 0 for a in planned)
    unknown = sum(1 for a in planned if a.size is None)
    price = config.defaults.storage_price_per_gb_month
    notes = [
        f"storing it: about {_dollars(known / GIB * price)} per month "
        f"at ${price:g} per GB-month (storage_price_per_gb_month)"
        + (f"; {unknown} assets of unknown size not counted" if unknown else "")
    ]
    scopes = [("the run", Limits(config.defaults.max_bytes, config.defaults.max_assets), planned)]
    for name, source in config.sources.items():
        limits = Limits(source.config.max_bytes, source.config.max_assets)
        scopes.append((f"source {name}", limits, [a for a in planned if a.source == name]))
    for label, limits, assets in scopes:
        size = sum(a.size or 0 for a in assets)
        if limits.max_bytes is not None and size > limits.max_bytes:
            notes.append(
                f"max_bytes {format_size(limits.max_bytes)} for {label}: the plan's "
                f"{format_size(size)} pass it, so new or changed assets beyond it would be skipped"
            )
        if limits.max_assets is not None and len(assets) > limits.max_assets:
            notes.append(
                f"max_assets {limits.max_assets} for {label}: the plan has {len(assets)}, "
                "so new or changed assets beyond it would be skipped"
            )
    return notes


def _dollars(amount: float) -> str:
    return "< $0.01" if 0 < amount < 0.01 else f"${amount:,.2f}"
