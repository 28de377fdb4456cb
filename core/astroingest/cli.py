"""The ``astroingest`` command: run, check, plugins."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from astroingest._config import Config, load_config
from astroingest._engine import Engine, RunOptions, select_sources
from astroingest._exceptions import AstroingestError, ConfigError, PluginError
from astroingest._plugins import Host, load_host
from astroingest._progress import BarProgress, LogProgress, ProgressSink, human_bytes
from astroingest._redact import RedactingFilter, Redactor
from astroingest._report import RunReport
from astroingest._version import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("astroingest")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: scripts and cron mails read better.
        self.exit(EXIT_USAGE, f"astroingest: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--no-plugins", action="store_true", help="load only the built-in plugins (no entry points)"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log retries and details")
    parser = _Parser(prog="astroingest", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"astroingest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", parents=[common], help="fetch every source into the store")
    run.add_argument("--sources", type=Path, required=True, help="path to sources.toml")
    run.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="only this source (repeatable)"
    )
    run.add_argument("--dry-run", action="store_true", help="plan and print what would be fetched")
    run.add_argument(
        "--no-progress", action="store_true", help="plain log lines even on a terminal"
    )

    check = commands.add_parser("check", parents=[common], help="validate sources.toml offline")
    check.add_argument("--sources", type=Path, required=True, help="path to sources.toml")

    plugins = commands.add_parser("plugins", parents=[common], help="list loaded plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    redactor = Redactor()
    console = Console(stderr=True)
    _setup_logging(args.verbose, redactor, console)
    try:
        host = load_host(entry_points=not args.no_plugins)
        if args.command == "plugins":
            return _plugins(host, args.json)
        config = load_config(args.sources, host)
        redactor.add(config.secrets)
        if args.command == "check":
            return _check(config, host)
        return _run(config, host, args, redactor, console)
    except (ConfigError, PluginError) as error:
        print(f"astroingest: error: {redactor(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("astroingest: interrupted; nothing partial was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AstroingestError as error:
        print(f"astroingest: error: {redactor(str(error))}", file=sys.stderr)
        return EXIT_FAILED


def _setup_logging(verbose: bool, redactor: Redactor, console: Console) -> None:
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    if not verbose:
        logging.getLogger("astroingest").getChild("retry").setLevel(logging.WARNING)


def _check(config: Config, host: Host) -> int:
    select_sources(config, ())
    for source in config.sources.values():
        state = "" if source.config.enabled else " (disabled)"
        print(f"{source.name}: {source.type.name}{state}")
    print(f"{config.path}: OK, {len(config.sources)} sources")
    return EXIT_OK


def _plugins(host: Host, as_json: bool) -> int:
    owners = host.source_types_by_plugin()
    rows: list[dict[str, Any]] = []
    for name, info in host.infos.items():
        plugin = host.pm.get_plugin(name)
        own = sorted(t for t, (_, owner) in owners.items() if owner == name)
        rows.append(
            {
                "name": name,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "source_types": own,
                "hooks": host.hooks_of(name) if plugin else [],
            }
        )
    broken = [
        {"name": b.name, "distribution": b.distribution, "error": b.error} for b in host.broken
    ]
    if as_json:
        print(json.dumps({"plugins": rows, "broken": broken}, indent=2))
        return EXIT_OK
    table = Table("plugin", "distribution", "version", "source types", "hooks")
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["distribution"]),
            str(row["version"]),
            ", ".join(row["source_types"]),
            ", ".join(h.removeprefix("astroingest_") for h in row["hooks"]),
        )
    Console().print(table)
    for b in broken:
        print(f"broken: {b['name']} ({b['distribution']}): {b['error']}", file=sys.stderr)
    return EXIT_OK


def _run(
    config: Config, host: Host, args: argparse.Namespace, redactor: Redactor, console: Console
) -> int:
    select_sources(config, args.only)  # unknown --only names are usage errors, before any network
    use_bar = console.is_terminal and not args.no_progress and not args.dry_run
    progress: ProgressSink = BarProgress(console) if use_bar else LogProgress()
    engine = Engine(config, host, progress, redactor)
    try:
        report = asyncio.run(_with_signals(engine, RunOptions(tuple(args.only), args.dry_run)))
    finally:
        progress.close()
    if args.dry_run:
        _print_plan(report)
        return EXIT_OK if report.clean else EXIT_FAILED
    _print_summary(report, config)
    return EXIT_OK if report.clean else EXIT_FAILED


async def _with_signals(engine: Engine, options: RunOptions) -> RunReport:
    """SIGTERM cancels like Ctrl-C does, so writers abort and the report is still written."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await engine.run(options)
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _print_plan(report: RunReport) -> None:
    for asset in report.assets:
        size = human_bytes(asset.size) if asset.size is not None else "size unknown"
        if asset.status == "failed":
            print(f"{asset.source}: {asset.error}")
        else:
            print(f"{asset.source}/{asset.key}  {size}  {asset.url}")
    planned = [a for a in report.assets if a.status == "planned"]
    known = sum(a.size or 0 for a in planned)
    print(f"would fetch {len(planned)} assets ({human_bytes(known)} of known size)")


def _print_summary(report: RunReport, config: Config) -> None:
    table = Table(title=f"run {report.run_id}: {report.status}")
    for column in ("source", "stored", "unchanged", "quarantined", "failed", "bytes"):
        table.add_column(column, justify="left" if column == "source" else "right")
    by_source: dict[str, dict[str, int]] = {}
    for asset in report.assets:
        counts = by_source.setdefault(
            asset.source,
            dict.fromkeys(("stored", "unchanged", "quarantined", "failed", "bytes"), 0),
        )
        counts[asset.status] = counts.get(asset.status, 0) + 1
        if asset.status == "stored":
            counts["bytes"] += asset.size or 0
    for source, counts in by_source.items():
        table.add_row(
            source,
            *(
                str(counts[c]) if c != "bytes" else human_bytes(counts[c])
                for c in ("stored", "unchanged", "quarantined", "failed", "bytes")
            ),
        )
    Console(width=120).print(table)
    for asset in report.assets:
        if asset.status in ("failed", "quarantined"):
            print(f"{asset.status}: {asset.source}/{asset.key or '-'}: {asset.error}")
    print(f"report: {config.store.logs.rstrip('/')}/runs/{report.run_id}.json")


if __name__ == "__main__":
    sys.exit(main())
