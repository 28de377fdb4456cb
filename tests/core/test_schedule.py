"""Schedules, due times, the ledger's last successes, crontab text and systemd units."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from astroingest._config import Source, load_config
from astroingest._crontab import (
    CrontabError,
    Entry,
    check_every,
    on_calendar,
    systemd_units,
    with_entry,
    without_entry,
)
from astroingest._exceptions import ConfigError
from astroingest._ledger import Ledger
from astroingest._plugins import Host
from astroingest._report import AssetResult, RunReport
from astroingest._schedule import (
    due_state,
    last_successes,
    now,
    record_successes,
    successful_sources,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _source(
    write_toml: Callable[[str], Path], host: Host, schedule: str | None, name: str = "a"
) -> Source:
    line = f'schedule = "{schedule}"' if schedule else ""
    path = write_toml(
        f"""
        [sources.{name}]
        plugin = "http"
        urls = ["http://127.0.0.1:9/a.csv"]
        {line}
        """
    )
    return load_config(path, host).sources[name]


def test_a_bad_cron_expression_is_a_one_line_config_error(
    write_toml: Callable[[str], Path], astroingest_host: Host
) -> None:
    with pytest.raises(ConfigError) as error:
        _source(write_toml, astroingest_host, "61 * * * *")
    assert str(error.value) == (
        "sources.toml: [sources.a] schedule: not a valid cron expression: '61 * * * *' (line 5)"
    )


def test_due_times_follow_the_schedule_in_utc(
    write_toml: Callable[[str], Path], astroingest_host: Host
) -> None:
    hourly = _source(write_toml, astroingest_host, "0 * * * *")
    assert due_state(hourly, None, at("2026-03-01T10:05")).due  # never ran
    last = at("2026-03-01T10:05")
    later = due_state(hourly, last, at("2026-03-01T10:59:59"))
    assert not later.due and later.why == "next due 2026-03-01 11:00 UTC"
    assert due_state(hourly, last, at("2026-03-01T11:00")).due
    missed = due_state(hourly, last, at("2026-03-02T08:30"))
    assert missed.due and missed.why == "due since 2026-03-01 11:00 UTC"  # once, not 21 times


def test_a_source_without_a_schedule_is_always_due(
    write_toml: Callable[[str], Path], astroingest_host: Host
) -> None:
    plain = _source(write_toml, astroingest_host, None)
    assert due_state(plain, at("2026-03-01T10:05"), at("2026-03-01T10:06")).due


def test_the_clock_can_be_set_for_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTROINGEST_NOW", "2026-03-01T10:05:00")
    assert now() == at("2026-03-01T10:05")
    monkeypatch.setenv("ASTROINGEST_NOW", "2026-03-01T12:05:00+02:00")
    assert now() == at("2026-03-01T10:05")
    monkeypatch.setenv("ASTROINGEST_NOW", "yesterday")
    with pytest.raises(ConfigError, match="ASTROINGEST_NOW: not an ISO 8601 time"):
        now()
    monkeypatch.delenv("ASTROINGEST_NOW")
    assert abs((now() - datetime.now(UTC)).total_seconds()) < 5


def _report(*results: tuple[str, str]) -> RunReport:
    report = RunReport("r1", "t", "sources.toml")
    for source, status in results:
        report.add(AssetResult(source, "k", None, status))  # type: ignore[arg-type]
    return report


def test_failed_or_skipped_assets_spoil_a_source_quarantine_does_not() -> None:
    report = _report(
        ("ok", "stored"),
        ("ok", "unchanged"),
        ("bad", "stored"),
        ("bad", "failed"),
        ("cut", "skipped"),
        ("odd", "quarantined"),
    )
    ran = ["ok", "bad", "cut", "odd", "empty"]
    assert successful_sources(report, ran) == ["ok", "odd", "empty"]


def test_last_successes_live_in_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    assert last_successes(path) == {}
    assert not path.exists()  # reading creates nothing
    ledger = Ledger(path)
    try:
        record_successes(
            ledger, _report(("a", "stored"), ("b", "failed")), ["a", "b"], at("2026-03-01T10:05")
        )
        record_successes(ledger, _report(), ["a"], at("2026-03-01T11:00"))
    finally:
        ledger.close()
    assert last_successes(path) == {"a": at("2026-03-01T11:00")}


# -- the crontab entry -------------------------------------------------------------


def _entry(tmp_path: Path, every: str = "*/15 * * * *") -> Entry:
    return Entry(tmp_path / "my data" / "sources.toml", every, tmp_path / "logs" / "cron.log")


def test_the_entry_runs_due_sources_with_absolute_quoted_paths(tmp_path: Path) -> None:
    begin, line, end = _entry(tmp_path).lines()
    assert begin.startswith("# >>> astroingest: ") and end.startswith("# <<< astroingest: ")
    assert line.startswith("*/15 * * * * /")
    assert " -m astroingest run --due --sources " in line
    assert f"'{tmp_path}/my data/sources.toml'" in line
    assert line.endswith(f">> {tmp_path}/logs/cron.log 2>&1")


def test_percent_signs_are_escaped_for_cron(tmp_path: Path) -> None:
    entry = Entry(tmp_path / "100%" / "sources.toml", "@hourly", tmp_path / "log")
    assert "100\\%" in entry.command() and "100%" not in entry.command().replace("\\%", "")


def test_install_is_idempotent_and_leaves_other_lines_alone(tmp_path: Path) -> None:
    theirs = ["MAILTO=me@example.org", "# my backups", "0 2 * * * /usr/bin/backup --all", ""]
    entry = _entry(tmp_path)
    once = with_entry(theirs, entry)
    assert once[: len(theirs)] == theirs and once[len(theirs) :] == entry.lines()
    assert with_entry(once, entry) == once
    changed = with_entry(once, _entry(tmp_path, "0 * * * *"))
    assert changed[: len(theirs)] == theirs and changed[-2].startswith("0 * * * * ")
    kept, removed = without_entry(changed, entry.sources)
    assert kept == theirs and removed is not None and len(removed) == 3
    assert without_entry(theirs, entry.sources) == (theirs, None)


def test_an_entry_edited_by_hand_is_not_guessed_at(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    begin, line, end = entry.lines()
    edited = [begin, line, "0 2 * * * /usr/bin/backup", end]
    with pytest.raises(CrontabError, match="edited by hand"):
        without_entry(edited, entry.sources)


@pytest.mark.parametrize("every", ["*/15 * * *", "* * * * * *", "@reboot", "61 * * * *"])
def test_every_must_be_five_valid_fields(every: str) -> None:
    with pytest.raises(ConfigError, match="--every"):
        check_every(every)


@pytest.mark.parametrize(
    ("every", "calendar"),
    [
        ("*/15 * * * *", "*-*-* *:00,15,30,45:00"),
        ("0 3 * * 1-5", "Mon,Tue,Wed,Thu,Fri *-*-* 03:00:00"),
        ("5 */12 1 jan,jul *", "*-01,07-01 00,12:05:00"),
        ("@daily", "*-*-* 00:00:00"),
        ("0 0 * * 0,7", "Sun *-*-* 00:00:00"),
    ],
)
def test_cron_to_systemd_calendar(every: str, calendar: str) -> None:
    assert on_calendar(every) == calendar


def test_either_or_days_have_no_systemd_equivalent() -> None:
    with pytest.raises(ConfigError, match="either-or"):
        on_calendar("0 0 1 * mon")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("every", ["*/15 * * * *", "0 3 * * 1-5", "5 */12 1 jan,jul *"])
def test_systemd_accepts_the_calendar(every: str) -> None:
    done = subprocess.run(
        ["systemd-analyze", "calendar", on_calendar(every)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_systemd_units_run_the_due_sources(tmp_path: Path) -> None:
    text = systemd_units(_entry(tmp_path), "astroingest-test")
    assert "[Service]\nType=oneshot" in text and "SuccessExitStatus=75" in text
    assert f'"{tmp_path}/my data/sources.toml"' in text
    assert "OnCalendar=*-*-* *:00,15,30,45:00" in text and "Persistent=true" in text
