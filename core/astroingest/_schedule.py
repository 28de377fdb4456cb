"""Per-source schedules: which sources are due, and when each last ran successfully.

A source's ``schedule`` is a cron expression, read in UTC. ``run --due`` runs a source
when a time its schedule names has passed since the start of its last successful run
(or it never had one); a source without a schedule runs every time.

A source's run is successful when none of its assets failed and none was skipped by a
budget guard. Quarantined assets do not spoil it: the archive answered and the verdict
is about content, which retrying sooner would not change (the exit status, 1, still
reports them). A failed source stays due, so the next tick retries it.

The clock is ``ASTROINGEST_NOW`` (ISO 8601; UTC unless it names a zone) when set — for
tests and for trying a schedule out — and the system clock otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from astroingest._exceptions import ConfigError
from astroingest._ledger import Ledger, ledger_path
from astroingest._report import RunReport

if TYPE_CHECKING:
    from astroingest._config import Config, Source

CLOCK_VARIABLE = "ASTROINGEST_NOW"
log = logging.getLogger("astroingest")
_UNSUCCESSFUL = frozenset({"failed", "skipped"})


def now() -> datetime:
    """The time schedules are judged by (``ASTROINGEST_NOW`` when set)."""
    text = os.environ.get(CLOCK_VARIABLE)
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{CLOCK_VARIABLE}: not an ISO 8601 time: {text!r} (e.g. 2026-03-01T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_cron(expression: str) -> str:
    """``expression`` if croniter understands it, else a ValueError with one line."""
    from croniter import croniter

    if not croniter.is_valid(expression):
        raise ValueError(f"not a valid cron expression: {expression!r}")
    return expression


def next_fire(expression: str, after: datetime) -> datetime:
    """The first time after ``after`` that ``expression`` names (UTC)."""
    from croniter import croniter

    fire: datetime = croniter(expression, after.astimezone(UTC)).get_next(datetime)
    return fire.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Due:
    source: str
    due: bool
    why: str  # for people: "never ran", "due since …", "next at …", "no schedule"
    next_at: datetime | None = None


def due_state(source: Source, last_success: datetime | None, at: datetime) -> Due:
    schedule = source.config.schedule
    if schedule is None:
        return Due(source.name, True, "no schedule: runs every time")
    if last_success is None:
        return Due(source.name, True, "never ran successfully", at)
    fire = next_fire(schedule, last_success)
    if fire <= at:
        return Due(source.name, True, f"due since {show_time(fire)}", fire)
    return Due(source.name, False, f"next due {show_time(fire)}", fire)


def due_states(
    sources: Iterable[Source], successes: Mapping[str, datetime], at: datetime
) -> list[Due]:
    return [due_state(s, successes.get(s.name), at) for s in sources]


def due_names(sources: Iterable[Source], ledger: Path, at: datetime) -> tuple[str, ...]:
    """The names of the sources due at ``at``, each one's state logged."""
    states = due_states(sources, last_successes(ledger), at)
    for state in states:
        log.info("source %s: %s%s", state.source, "" if state.due else "not due, ", state.why)
    return tuple(state.source for state in states if state.due)


def ledger_file(config: Config) -> Path:
    """Where the run's ledger lives (beside local logs, else in the user's state directory)."""
    from astroingest.stores.local import path_from_url

    logs = config.store.logs
    root = path_from_url(logs) if logs.startswith("file://") else None
    return ledger_path(root, logs)


def last_successes(ledger: Path) -> dict[str, datetime]:
    """Each source's last successful run start, from the ledger (none if it does not exist)."""
    if not ledger.exists():
        return {}
    opened = Ledger(ledger)
    try:
        return {k: datetime.fromisoformat(v) for k, v in opened.last_successes().items()}
    finally:
        opened.close()


def successful_sources(report: RunReport, ran: Iterable[str]) -> list[str]:
    spoiled = {a.source for a in report.assets if a.status in _UNSUCCESSFUL}
    return [name for name in ran if name not in spoiled]


def record_successes(
    ledger: Ledger, report: RunReport, ran: Iterable[str], started: datetime
) -> None:
    """Remember, for ``run --due``, which of the sources that ran succeeded."""
    when = _iso(started)
    for name in successful_sources(report, ran):
        ledger.source_succeeded(name, when, report.run_id)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def show_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
