"""The user's crontab entry that runs ``astroingest run --due``, and a systemd alternative.

One entry per sources.toml, between two marker comments that name the file: installing
again replaces only those lines (so installing twice changes nothing), removing takes
out only those lines, and every other line of the crontab is written back as it was.
The command uses absolute paths (this Python, the sources file, the log file) because
cron runs with a bare environment and an unknown working directory.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astroingest._exceptions import AstroingestError, ConfigError

DEFAULT_EVERY = "*/15 * * * *"
_BEGIN = "# >>> astroingest: {sources} (managed by `astroingest schedule`; do not edit) >>>"
_END = "# <<< astroingest: {sources} <<<"
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class CrontabError(AstroingestError):
    """The crontab program is missing or refused what it was given."""


def check_every(expression: str) -> str:
    """A five-field cron expression (or a macro such as @hourly) for the crontab line."""
    from croniter import croniter

    macro = expression.startswith("@") and expression != "@reboot"
    if "\n" in expression or not (macro or len(expression.split()) == 5):
        raise ConfigError(f"--every: {expression!r}: give five cron fields, e.g. '*/15 * * * *'")
    if not croniter.is_valid(expression):
        raise ConfigError(f"--every: not a valid cron expression: {expression!r}")
    return expression


@dataclass(frozen=True, slots=True)
class Entry:
    """The lines that run one sources.toml on a schedule."""

    sources: Path
    every: str
    log: Path

    def command(self) -> str:
        argv = [sys.executable, "-m", "astroingest", "run", "--due", "--sources", self.sources]
        line = " ".join(shlex.quote(str(a)) for a in argv)
        line += f" >> {shlex.quote(str(self.log))} 2>&1"
        # An unescaped % ends a crontab command (the rest becomes its stdin).
        return line.replace("%", "\\%")

    def lines(self) -> list[str]:
        return [
            begin_marker(self.sources),
            f"{self.every} {self.command()}",
            end_marker(self.sources),
        ]


def begin_marker(sources: Path) -> str:
    return _BEGIN.format(sources=sources)


def end_marker(sources: Path) -> str:
    return _END.format(sources=sources)


def absolute(path: Path) -> Path:
    resolved = path.expanduser().resolve()
    if "\n" in str(resolved) or "\r" in str(resolved):
        raise ConfigError(f"{path!r}: a path with a line break cannot go into a crontab")
    return resolved


def without_entry(lines: Sequence[str], sources: Path) -> tuple[list[str], list[str] | None]:
    """The crontab minus the entry of ``sources``, and the entry's lines if there was one."""
    begin, end = begin_marker(sources), end_marker(sources)
    if begin not in lines:
        return list(lines), None
    at = list(lines).index(begin)
    if list(lines[at + 2 : at + 3]) != [end]:
        # Someone edited the entry by hand: guessing its extent could eat their lines.
        raise CrontabError(
            f"the astroingest entry for {sources} in your crontab was edited by hand; "
            "fix or remove it with `crontab -e`"
        )
    return [*lines[:at], *lines[at + 3 :]], list(lines[at : at + 3])


def with_entry(lines: Sequence[str], entry: Entry) -> list[str]:
    """The crontab with ``entry`` in place of the old one (or at the end)."""
    begin = begin_marker(entry.sources)
    if begin not in lines:
        return [*lines, *entry.lines()]
    at = list(lines).index(begin)
    kept, _ = without_entry(lines, entry.sources)
    return [*kept[:at], *entry.lines(), *kept[at:]]


class Crontab:
    """The current user's crontab, through the system's ``crontab`` program."""

    def __init__(self) -> None:
        program = shutil.which("crontab")
        if program is None:
            raise CrontabError(
                "no crontab program on PATH (install cron, or use `astroingest schedule systemd`)"
            )
        self.program = program

    def read(self) -> list[str]:
        done = self._call(["-l"])
        if done.returncode != 0:
            if "no crontab" in done.stderr.lower():
                return []
            raise CrontabError(f"crontab -l failed: {_first_line(done.stderr)}")
        return done.stdout.splitlines()

    def write(self, lines: Sequence[str]) -> None:
        text = "".join(f"{line}\n" for line in lines)
        done = self._call(["-"], text)
        if done.returncode != 0:
            raise CrontabError(f"crontab refused the new table: {_first_line(done.stderr)}")

    def install(self, entry: Entry) -> bool:
        """Put ``entry`` in; False when it was there already, exactly so."""
        current = self.read()
        updated = with_entry(current, entry)
        if updated == current:
            return False
        self.write(updated)
        return True

    def remove(self, sources: Path) -> bool:
        current = self.read()
        kept, found = without_entry(current, sources)
        if found is None:
            return False
        self.write(kept)
        return True

    def entry_of(self, sources: Path) -> list[str] | None:
        return without_entry(self.read(), sources)[1]

    def _call(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.program, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise CrontabError(f"cannot run {self.program}: {error}") from None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else "no message"


def systemd_units(entry: Entry, unit: str = "astroingest") -> str:
    """A service + timer pair doing what the crontab entry does (logs go to the journal)."""
    argv = [sys.executable, "-m", "astroingest", "run", "--due", "--sources", str(entry.sources)]
    exec_start = " ".join(_systemd_quote(a) for a in argv)
    return f"""\
# ~/.config/systemd/user/{unit}.service
[Unit]
Description=astroingest: run the due sources of {_systemd_text(str(entry.sources))}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
WorkingDirectory={_systemd_text(str(entry.sources.parent))}
ExecStart={exec_start}
# 75: another run still holds the lock; this one did nothing, which is not a failure.
SuccessExitStatus=75

# ~/.config/systemd/user/{unit}.timer
[Unit]
Description=astroingest: {_systemd_text(entry.every)}

[Timer]
OnCalendar={on_calendar(entry.every)}
Persistent=true

[Install]
WantedBy=timers.target

# Then: systemctl --user daemon-reload && systemctl --user enable --now {unit}.timer
# (and `loginctl enable-linger $USER` to run while you are logged out)
"""


def on_calendar(expression: str) -> str:
    """A cron expression as systemd's OnCalendar, or ConfigError when it has no equivalent."""
    from croniter import croniter

    fields = croniter(expression).expanded
    if len(fields) != 5 or any(not isinstance(v, int) for f in fields for v in f if v != "*"):
        raise ConfigError(f"--every: {expression!r} has no systemd OnCalendar equivalent")
    minute, hour, day, month, weekday = fields
    if day != ["*"] and weekday != ["*"]:
        # cron runs when either matches, systemd only when both do
        raise ConfigError(
            f"--every: {expression!r} restricts both day of month and day of week; "
            "systemd cannot express cron's either-or"
        )
    days = "" if weekday == ["*"] else ",".join(dict.fromkeys(_DAYS[d] for d in weekday)) + " "
    return f"{days}*-{_join(month)}-{_join(day)} {_join(hour)}:{_join(minute)}:00"


def _join(values: list[int | str]) -> str:
    return "*" if values == ["*"] else ",".join(f"{v:02d}" for v in values if isinstance(v, int))


def _systemd_quote(word: str) -> str:
    # systemd expands %-specifiers and $VARIABLES in ExecStart; quote what it would split.
    word = word.replace("%", "%%").replace("$", "$$")
    if any(c in word for c in " \t\"\\'"):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def _systemd_text(text: str) -> str:
    return text.replace("%", "%%")
