"""Unattended runs through the real CLI: --due, the run lock, JSON logs, guards, crontab."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from astroingest._archive_server import ArchiveServer
from tests.conftest import run_cli
from tests.e2e.conftest import reports

CSV = b"pl_name,pl_eqt\nTRAPPIST-1 e,250\nKepler-442 b,233\n"
EXIT_LOCKED = 75
# For commands that never fetch: a source nobody listens for.
NO_RUN = '[sources.a]\nplugin = "http"\nurls = ["http://127.0.0.1:9/a.csv"]\n'


def write_sources(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sources.toml"
    head = "[defaults]\nbackoff = 0.05\nmax_backoff = 0.2\nread_timeout = 5\n"
    path.write_text(head + textwrap.dedent(body))
    return path


def two_sources(archive: ArchiveServer, tmp_path: Path, defaults: str = "") -> Path:
    hourly = archive.add("hourly.csv", CSV, content_type="text/csv")
    always = archive.add("always.csv", CSV, content_type="text/csv")
    return write_sources(
        tmp_path,
        f"""
        {defaults}
        [sources.hourly]
        plugin = "http"
        urls = ["{hourly}"]
        schedule = "0 * * * *"

        [sources.always]
        plugin = "http"
        urls = ["{always}"]
        """,
    )


def run_due(sources: Path, when: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["run", "--due", "--sources", str(sources)], env={"ASTROINGEST_NOW": when})


# -- schedules ---------------------------------------------------------------------


def test_due_runs_a_scheduled_source_once_per_fire_time(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        sources = two_sources(archive, tmp_path)
        first = run_due(sources, "2026-03-01T10:05:00Z")
        assert first.returncode == 0, first.stderr
        assert archive.count("hourly.csv") == 1 and archive.count("always.csv") == 1

        second = run_due(sources, "2026-03-01T10:59:00Z")
        assert second.returncode == 0, second.stderr
        assert archive.count("hourly.csv") == 1 and archive.count("always.csv") == 2
        assert "source hourly: not due, next due 2026-03-01 11:00 UTC" in second.stderr

        third = run_due(sources, "2026-03-01T11:00:00Z")
        assert third.returncode == 0, third.stderr
        assert archive.count("hourly.csv") == 2 and archive.count("always.csv") == 3

    runs = reports(tmp_path / "astroingest-data")
    assert [sorted({a["source"] for a in r["assets"]}) for r in runs] == [
        ["always", "hourly"],
        ["always"],
        ["always", "hourly"],
    ]


def test_a_failed_scheduled_source_stays_due(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        sources = two_sources(archive, tmp_path)
        archive.fault("hourly.csv", "404")
        failed = run_due(sources, "2026-03-01T10:05:00Z")
        assert failed.returncode == 1
        retried = run_due(sources, "2026-03-01T10:20:00Z")
        assert retried.returncode == 0, retried.stderr
        assert archive.count("hourly.csv") == 2
        settled = run_due(sources, "2026-03-01T10:35:00Z")
        assert settled.returncode == 0 and archive.count("hourly.csv") == 2


def test_nothing_due_does_nothing_and_exits_0(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        url = archive.add("daily.csv", CSV, content_type="text/csv")
        sources = write_sources(
            tmp_path,
            f"""
            [sources.daily]
            plugin = "http"
            urls = ["{url}"]
            schedule = "0 3 * * *"
            """,
        )
        assert run_due(sources, "2026-03-01T03:10:00Z").returncode == 0
        idle = run_due(sources, "2026-03-01T12:00:00Z")
        assert idle.returncode == 0, idle.stderr
        assert "nothing is due" in idle.stderr
        assert archive.count("daily.csv") == 1
    assert len(reports(tmp_path / "astroingest-data")) == 1


def test_a_bad_clock_is_a_usage_error(tmp_path: Path) -> None:
    sources = write_sources(tmp_path, NO_RUN)
    done = run_due(sources, "soon")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "astroingest: error: ASTROINGEST_NOW: not an ISO 8601 time: 'soon' (e.g. 2026-03-01T12:00:00Z)"
    ]


# -- the run lock ------------------------------------------------------------------


def test_a_second_run_exits_at_once_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    with ArchiveServer(latency=4) as archive:  # the first run takes a while
        sources = two_sources(archive, tmp_path)
        first = subprocess.Popen(
            [sys.executable, "-m", "astroingest", "run", "--sources", str(sources)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            holder = tmp_path / "astroingest-data" / "logs" / "ledger.run.holder"
            deadline = time.monotonic() + 30
            while not holder.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert holder.exists(), "the first run never took the lock"
            assert holder.read_text().startswith(f"pid {first.pid} since ")

            started = time.monotonic()
            second = run_cli(["run", "--sources", str(sources)])
            waited = time.monotonic() - started
            dry = run_cli(["run", "--dry-run", "--sources", str(sources)])
            _, first_err = first.communicate(timeout=60)
        finally:
            first.kill()
    assert second.returncode == EXIT_LOCKED
    [line] = second.stderr.strip().splitlines()
    assert line.startswith("astroingest: another run holds the lock ")
    assert f"(pid {first.pid} since " in line and line.endswith("; exiting")
    assert second.stdout == ""
    assert waited < 4, f"the second run waited {waited:.1f} s"
    assert dry.returncode == 0, dry.stderr  # a dry run needs no lock
    assert first.returncode == 0, first_err
    assert len(reports(tmp_path / "astroingest-data")) == 1  # the second wrote nothing
    assert not holder.exists()


def test_the_lock_is_free_again_after_a_run(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        sources = two_sources(archive, tmp_path)
        for _ in range(2):
            done = run_cli(["run", "--sources", str(sources)])
            assert done.returncode == 0, done.stderr


# -- JSON logs ---------------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_logs_are_one_object_per_line_and_scrubbed(tmp_path: Path) -> None:
    secret = "s3cr3t-T0ken-9f8e"
    with ArchiveServer() as archive:
        good = archive.add("good.csv", CSV, content_type="text/csv")
        sources = write_sources(
            tmp_path,
            f"""
            [sources.mirror]
            plugin = "http"
            urls = ["{good}", "{archive.base_url}/missing/${{TOKEN}}.csv"]
            """,
        )
        done = run_cli(
            ["run", "--log-format", "json", "--sources", str(sources)], env={"TOKEN": secret}
        )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = json_lines(done.stderr)
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert secret not in done.stderr
    by_status = {line.get("status"): line for line in lines if "key" in line}
    assert by_status["stored"]["source"] == "mirror" and by_status["stored"]["key"] == "good.csv"
    assert by_status["failed"]["level"] == "WARNING" and "***" in str(by_status["failed"]["key"])
    summary = lines[-1]
    assert summary["totals"] == {
        "stored": 1,
        "unchanged": 0,
        "failed": 1,
        "quarantined": 0,
        "skipped": 0,
        "bytes": len(CSV),
    }
    assert str(summary["report"]).endswith(f"/runs/{summary['run_id']}.json")


def test_config_turns_json_on_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        sources = two_sources(archive, tmp_path, defaults='log_format = "json"')
        auto = run_cli(["run", "--sources", str(sources)])  # captured: not a terminal
        forced = run_cli(["run", "--log-format", "text", "--sources", str(sources)])
    assert auto.returncode == 0, auto.stderr
    assert {line["message"] for line in json_lines(auto.stderr)} >= {
        "stored hourly/hourly.csv",
        "stored always/always.csv",
    }
    assert forced.returncode == 0
    assert "report:" in forced.stdout
    with pytest.raises(json.JSONDecodeError):
        json_lines(forced.stderr)


def test_the_lock_message_is_json_too_when_logs_are(tmp_path: Path) -> None:
    from filelock import FileLock

    sources = write_sources(tmp_path, NO_RUN)
    lock = FileLock(tmp_path / "astroingest-data" / "logs" / "ledger.run.lock")
    (tmp_path / "astroingest-data" / "logs").mkdir(parents=True)
    with lock:
        done = run_cli(["run", "--log-format", "json", "--sources", str(sources)])
    assert done.returncode == EXIT_LOCKED
    [line] = json_lines(done.stderr)
    assert line["level"] == "ERROR"
    assert str(line["message"]).startswith("another run holds the lock ")


# -- budget guards through the CLI ---------------------------------------------------


def test_a_guard_stops_fetching_reports_what_it_skipped_and_exits_1(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        sources = two_sources(archive, tmp_path)
        done = run_cli(["run", "--max-assets", "1", "--sources", str(sources)])
        assert archive.count("hourly.csv") + archive.count("always.csv") == 1
    assert done.returncode == 1
    assert "skipped: " in done.stdout and "max_assets 1 reached for the run" in done.stdout
    [report] = reports(tmp_path / "astroingest-data")
    assert report["status"] == "failed"
    assert report["totals"]["stored"] == 1 and report["totals"]["skipped"] == 1
    [skipped] = [a for a in report["assets"] if a["status"] == "skipped"]
    assert skipped["error"] == "max_assets 1 reached for the run"


def test_bad_guard_flags_are_usage_errors(tmp_path: Path) -> None:
    sources = write_sources(tmp_path, NO_RUN)
    for flag, value in (("--max-bytes", "lots"), ("--max-assets", "0")):
        done = run_cli(["run", flag, value, "--sources", str(sources)])
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and flag in done.stderr


def test_dry_run_prints_planned_bytes_cost_and_guards(tmp_path: Path) -> None:
    gib = 2**30
    sources = write_sources(
        tmp_path,
        f"""
        storage_price_per_gb_month = 10.0
        max_bytes = "1.5 GiB"

        [sources.big]
        plugin = "http"
        urls = [
            {{ url = "http://127.0.0.1:9/a.nc", size = {gib} }},
            {{ url = "http://127.0.0.1:9/b.nc", size = {gib} }},
            "http://127.0.0.1:9/c.nc",
        ]
        """,
    )
    done = run_cli(["run", "--dry-run", "--sources", str(sources)])
    assert done.returncode == 0, done.stderr
    assert "would fetch 3 assets (2.0 GiB of known size)" in done.stdout
    assert (
        "storing it: about $20.00 per month at $10 per GB-month (storage_price_per_gb_month);"
        " 1 assets of unknown size not counted" in done.stdout
    )
    assert "max_bytes 1.5 GiB for the run: the plan's 2.0 GiB pass it" in done.stdout


# -- crontab ---------------------------------------------------------------------------

STAND_IN = """\
#!{python}
# A stand-in for crontab(1): the table lives in $FAKE_CRONTAB, each call is logged.
import os, sys
table = os.environ["FAKE_CRONTAB"]
with open(table + ".calls", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1:] == ["-l"]:
    if not os.path.exists(table):
        sys.stderr.write("no crontab for tester\\n")
        sys.exit(1)
    sys.stdout.write(open(table).read())
elif sys.argv[1:] == ["-"]:
    data = sys.stdin.read()
    if not data.endswith("\\n"):
        sys.stderr.write("premature EOF\\n")
        sys.exit(1)
    open(table, "w").write(data)
else:
    sys.exit(2)
"""


@pytest.fixture
def fake_crontab(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "crontab"
    program.write_text(STAND_IN.format(python=sys.executable))
    program.chmod(0o755)
    table = tmp_path / "crontab.txt"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_CRONTAB": str(table)}
    return table, env


THEIRS = "MAILTO=me@example.org\n# nightly backup\n0 2 * * * /usr/bin/backup --all\n"


def test_schedule_install_show_remove_with_a_stand_in_crontab(
    tmp_path: Path, fake_crontab: tuple[Path, dict[str, str]]
) -> None:
    table, env = fake_crontab
    table.write_text(THEIRS)
    with ArchiveServer() as archive:
        sources = two_sources(archive, tmp_path)
        install = run_cli(["schedule", "install", "--sources", str(sources)], env=env)
        assert install.returncode == 0, install.stderr
        assert install.stdout.startswith("installed:")
        installed = table.read_text()
        assert installed.startswith(THEIRS)
        entry = installed[len(THEIRS) :].splitlines()
        assert len(entry) == 3 and entry[1].startswith("*/15 * * * * /")

        calls = Path(f"{table}.calls")
        calls.unlink()
        again = run_cli(["schedule", "install", "--sources", str(sources)], env=env)
        assert again.returncode == 0 and again.stdout.startswith("already installed, unchanged:")
        assert table.read_text() == installed
        assert calls.read_text() == "-l\n"  # read, never rewritten

        # The installed line works as cron would run it: bare environment, another folder.
        command = entry[1].split(" ", 5)[5]
        cron_env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}
        ran = subprocess.run(
            ["/bin/sh", "-c", command], cwd="/", env=cron_env, timeout=120, check=False
        )
        assert ran.returncode == 0
        log = tmp_path / "astroingest-data" / "logs" / "cron.log"
        assert "stored hourly/hourly.csv" in log.read_text()
        assert archive.count("hourly.csv") == 1

        show = run_cli(
            ["schedule", "show", "--sources", str(sources)],
            env={**env, "ASTROINGEST_NOW": "2026-03-01T10:30:00Z"},
        )
    assert show.returncode == 0, show.stderr
    assert show.stdout.splitlines()[:3] == entry
    rows = {line.split()[0]: line for line in show.stdout.splitlines()[4:]}
    assert "0 * * * *" in rows["hourly"] and "never" not in rows["hourly"]
    assert rows["always"].rstrip().endswith("next tick (no schedule: runs every time)")

    removed = run_cli(["schedule", "remove", "--sources", str(sources)], env=env)
    assert removed.returncode == 0 and removed.stdout.startswith("removed the entry for ")
    assert table.read_text() == THEIRS
    twice = run_cli(["schedule", "remove", "--sources", str(sources)], env=env)
    assert twice.returncode == 0 and twice.stdout.startswith("no entry for ")
    assert table.read_text() == THEIRS


def test_install_into_an_empty_crontab_and_a_changed_interval(
    tmp_path: Path, fake_crontab: tuple[Path, dict[str, str]]
) -> None:
    table, env = fake_crontab
    sources = write_sources(tmp_path, NO_RUN)
    args = ["schedule", "install", "--sources", str(sources)]
    assert run_cli(args, env=env).returncode == 0
    assert len(table.read_text().splitlines()) == 3
    hourly = run_cli([*args, "--every", "@hourly"], env=env)
    assert hourly.returncode == 0 and hourly.stdout.startswith("installed:")
    lines = table.read_text().splitlines()
    assert len(lines) == 3 and lines[1].startswith("@hourly ")
    bad = run_cli([*args, "--every", "every hour"], env=env)
    assert bad.returncode == 2 and "--every" in bad.stderr


def test_without_crontab_install_fails_clearly_and_show_still_shows(tmp_path: Path) -> None:
    sources = write_sources(tmp_path, NO_RUN)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {"PATH": str(empty)}
    install = run_cli(["schedule", "install", "--sources", str(sources)], env=env)
    assert install.returncode == 1
    assert install.stderr.strip() == (
        "astroingest: error: no crontab program on PATH "
        "(install cron, or use `astroingest schedule systemd`)"
    )
    show = run_cli(["schedule", "show", "--sources", str(sources)], env=env)
    assert show.returncode == 0 and "no crontab program on PATH" in show.stdout


def test_schedule_systemd_prints_a_service_and_timer(tmp_path: Path) -> None:
    sources = write_sources(tmp_path, NO_RUN)
    done = run_cli(["schedule", "systemd", "--sources", str(sources), "--every", "0 * * * *"])
    assert done.returncode == 0, done.stderr
    assert "ExecStart=" in done.stdout and f"--sources {sources.resolve()}" in done.stdout
    assert "OnCalendar=*-*-* *:00:00" in done.stdout


@pytest.mark.skipif(
    shutil.which("crontab") is None, reason="no crontab program on this machine: NOT RUN"
)
def test_schedule_against_the_real_crontab(tmp_path: Path) -> None:
    before = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
    saved = before.stdout if before.returncode == 0 else None
    sources = write_sources(tmp_path, NO_RUN)
    try:
        assert run_cli(["schedule", "install", "--sources", str(sources)]).returncode == 0
        listed = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True)
        assert f"--sources {shlex.quote(str(sources.resolve()))}" in listed.stdout
        assert listed.stdout.startswith(saved or "")
        again = run_cli(["schedule", "install", "--sources", str(sources)])
        assert again.stdout.startswith("already installed, unchanged:")
        assert run_cli(["schedule", "remove", "--sources", str(sources)]).returncode == 0
        after = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
        assert (after.stdout if after.returncode == 0 else "") == (saved or "")
    finally:
        if saved is None:
            subprocess.run(["crontab", "-r"], capture_output=True, check=False)
        else:
            subprocess.run(["crontab", "-"], input=saved, text=True, check=True)
