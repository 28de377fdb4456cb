"""``astroingest schedule install|show|remove|systemd``: run the due sources unattended."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from astroingest._config import Config
from astroingest._crontab import (
    DEFAULT_EVERY,
    Crontab,
    CrontabError,
    Entry,
    absolute,
    check_every,
    systemd_units,
)
from astroingest._schedule import due_states, last_successes, ledger_file, now, show_time


def add_schedule_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """The ``schedule`` command and its four actions, on the CLI's subparsers."""
    schedule = commands.add_parser(
        "schedule", parents=[common], help="run `run --due` from cron or a systemd timer"
    )
    actions = schedule.add_subparsers(dest="action", required=True, parser_class=type(schedule))
    helps = {
        "install": "add (or update) this file's entry in your crontab",
        "show": "print the crontab entry and each source's next due time",
        "remove": "take this file's entry out of your crontab",
        "systemd": "print a systemd service + timer pair instead of a crontab entry",
    }
    for name, text in helps.items():
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("--sources", type=Path, required=True, help="path to sources.toml")
        if name in ("install", "systemd"):
            action.add_argument(
                "--every",
                default=DEFAULT_EVERY,
                metavar="CRON",
                help=f"how often to look for due sources (default {DEFAULT_EVERY!r})",
            )
        if name == "install":
            action.add_argument(
                "--log", type=Path, help="append the runs' output here (default: beside the ledger)"
            )
        if name == "systemd":
            action.add_argument("--unit", default="astroingest", help="unit name (no suffix)")


def schedule_command(config: Config, args: argparse.Namespace) -> int:
    sources = absolute(config.path)
    if args.action == "show":
        _show(config, sources)
        return 0
    if args.action == "remove":
        removed = Crontab().remove(sources)
        print(f"removed the entry for {sources}" if removed else f"no entry for {sources}")
        return 0
    entry = Entry(sources, check_every(args.every), _log_file(config, getattr(args, "log", None)))
    if args.action == "systemd":
        print(systemd_units(entry, args.unit), end="")
        return 0
    entry.log.parent.mkdir(parents=True, exist_ok=True)  # cron's >> does not create folders
    changed = Crontab().install(entry)
    print("installed:" if changed else "already installed, unchanged:")
    print("\n".join(entry.lines()))
    return 0


def _log_file(config: Config, given: Path | None) -> Path:
    if given is not None:
        return absolute(given)
    return ledger_file(config).parent / "cron.log"


def _show(config: Config, sources: Path) -> None:
    try:
        lines = Crontab().entry_of(sources)
    except CrontabError as error:
        print(f"crontab: {error}")
    else:
        if lines is None:
            print(f"no crontab entry for {sources} (add one with `astroingest schedule install`)")
        else:
            print("\n".join(lines))
    at = now()
    successes = last_successes(ledger_file(config))
    enabled = [s for s in config.sources.values() if s.config.enabled]
    print(f"\nsources (UTC; now {show_time(at)}):")
    rows = [("source", "schedule", "last success", "next run")]
    for state in due_states(enabled, successes, at):
        schedule = config.sources[state.source].config.schedule or "-"
        last = successes.get(state.source)
        rows.append(
            (
                state.source,
                schedule,
                show_time(last) if last else "never",
                _next(state.due, state.why),
            )
        )
    rows += [
        (s.name, s.config.schedule or "-", "-", "disabled")
        for s in config.sources.values()
        if not s.config.enabled
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(
            "  "
            + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
            + "  "
            + row[3]
        )


def _next(due: bool, why: str) -> str:
    return f"next tick ({why})" if due else why.removeprefix("next due ")
