"""The ``astroingest`` command: run, check, plugins."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from astroingest import _schedule
from astroingest._backup import add_backup_parser, backup_command
from astroingest._buckets import add_buckets_parser, buckets_command
from astroingest._budget import parse_size, plan_notes, with_run_limits
from astroingest._config import Config, load_config
from astroingest._doctor import add_doctor_parser, doctor_command
from astroingest._engine import Engine, Executor, RunOptions, select_sources
from astroingest._exceptions import AstroingestError, ConfigError, PluginError
from astroingest._executors import EXECUTORS, executor_for
from astroingest._jsonlog import JsonFormatter, JsonProgress
from astroingest._plugins import Host, load_host
from astroingest._progress import BarProgress, LogProgress, ProgressSink, human_bytes
from astroingest._redact import RedactingFilter, Redactor
from astroingest._report import RunReport
from astroingest._runlock import EXIT_LOCKED, RunLocked, run_lock
from astroingest._schedule_command import add_schedule_parser, schedule_command
from astroingest._version import __version__
from astroingest.commands import Command
from astroingest.cubes._command import add_cube_parser, cube_command, run_cubes

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("astroingest")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: scripts and cron mails read better.
        self.exit(EXIT_USAGE, f"astroingest: error: {message} (see --help)\n")


def build_parser(plugin_commands: Mapping[str, Command] | None = None) -> argparse.ArgumentParser:
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
    run.add_argument(
        "--due", action="store_true", help="only sources whose schedule has come due (cron)"
    )
    run.add_argument(
        "--log-format", choices=("text", "json"), help="json: one JSON object per log line"
    )
    run.add_argument(
        "--max-bytes", type=_size_arg, metavar="SIZE", help='land at most SIZE ("10 GiB")'
    )
    run.add_argument("--max-assets", type=_count_arg, metavar="N", help="land at most N assets")
    run.add_argument(
        "--cubes", action="store_true", help="then bring the cubes fed by these sources up to date"
    )
    run.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="where transfers run: local (this process, the default) or dask (a Dask cluster; "
        "without --scheduler, a local cluster of one worker process per CPU; needs the dask extra)",
    )
    run.add_argument(
        "--scheduler", metavar="ADDRESS", help="the Dask scheduler, e.g. tcp://HOST:8786"
    )

    check = commands.add_parser("check", parents=[common], help="validate sources.toml offline")
    check.add_argument("--sources", type=Path, required=True, help="path to sources.toml")

    plugins = commands.add_parser("plugins", parents=[common], help="list loaded plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    add_schedule_parser(commands, common)
    add_buckets_parser(commands, common)
    add_backup_parser(commands, common)
    add_doctor_parser(commands, common)
    add_cube_parser(commands, common)
    for command in (plugin_commands or {}).values():
        if command.name not in commands.choices:  # the built-in commands keep their names
            sub = commands.add_parser(command.name, parents=[common], help=command.help)
            command.add_arguments(sub)
            sub.set_defaults(plugin_command=command)
    return parser


def _plugin_commands(argv: Sequence[str]) -> dict[str, Command]:
    """Commands plugins add (``astroingest train``): the parser needs them before parsing.
    Quietly: a broken plugin is reported once, when the host is loaded for the command."""
    log.disabled = True
    try:
        return load_host(entry_points="--no-plugins" not in argv).commands()
    except AstroingestError:
        return {}
    finally:
        log.disabled = False


def _size_arg(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not isinstance(size, int) or size < 1:
        raise argparse.ArgumentTypeError(f"not a positive size: {text!r}")
    return size


def _count_arg(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(_plugin_commands(words)).parse_args(argv)
    redactor = Redactor()
    console = Console(stderr=True)
    _setup_logging(args.verbose, redactor, console, getattr(args, "log_format", None) == "json")
    try:
        host = load_host(entry_points=not args.no_plugins)
        if getattr(args, "plugin_command", None) is not None:
            return int(args.plugin_command.run(args))
        if args.command == "plugins":
            return _plugins(host, args.json)
        if args.command == "doctor":  # reports a broken config as a failed check
            return EXIT_OK if doctor_command(args, host, redactor) else EXIT_FAILED
        config = load_config(args.sources, host)
        redactor.add(config.secrets)
        if args.command == "check":
            return _check(config, host)
        if args.command == "schedule":
            return schedule_command(config, args)
        if args.command == "buckets":
            return EXIT_OK if buckets_command(config, args) else EXIT_FAILED
        if args.command == "cube":
            return EXIT_OK if cube_command(config, host, args) else EXIT_FAILED
        if args.command == "backup":
            return EXIT_OK if backup_command(config, host, args) else EXIT_FAILED
        return _run(config, host, args, redactor, console)
    except (ConfigError, PluginError) as error:
        _say(f"error: {redactor(str(error))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("interrupted; nothing partial was left behind")
        return EXIT_INTERRUPTED
    except RunLocked as error:
        _say(str(error))
        return EXIT_LOCKED
    except AstroingestError as error:
        _say(f"error: {redactor(str(error))}")
        return EXIT_FAILED


def _say(text: str) -> None:
    """The one closing line on stderr: plain, or a JSON log line when logs are JSON."""
    if any(isinstance(h.formatter, JsonFormatter) for h in log.handlers):
        log.error(text)
    else:
        print(f"astroingest: {text}", file=sys.stderr)


def _setup_logging(
    verbose: bool, redactor: Redactor, console: Console, json_lines: bool = False
) -> None:
    handler: logging.Handler
    if json_lines:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(redactor))
    elif console.is_terminal:
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
    config = with_run_limits(config, args.max_bytes, args.max_assets)
    executor = executor_for(  # usage errors (no dask extra) before the lock touches the store
        args.executor,
        args.scheduler,
        entry_points=not args.no_plugins,
        concurrency=config.defaults.concurrency,
    )
    if args.log_format is None and config.defaults.log_format == "json":
        args.log_format = "text" if sys.stdout.isatty() else "json"
        _setup_logging(args.verbose, redactor, console, args.log_format == "json")
    if args.dry_run:  # plans only, changes nothing: no lock
        return _fetch(config, host, args, redactor, console, executor)
    with run_lock(_schedule.ledger_file(config)):
        return _fetch(config, host, args, redactor, console, executor)


def _fetch(
    config: Config,
    host: Host,
    args: argparse.Namespace,
    redactor: Redactor,
    console: Console,
    executor: Executor | None,
) -> int:
    only = tuple(args.only)
    if args.due:
        chosen = select_sources(config, only)
        only = _schedule.due_names(chosen, _schedule.ledger_file(config), _schedule.now())
        if not only:
            log.info("nothing is due")
            return EXIT_OK
    json_lines = args.log_format == "json"
    use_bar = console.is_terminal and not args.no_progress and not args.dry_run and not json_lines
    progress: ProgressSink = (
        JsonProgress() if json_lines else BarProgress(console) if use_bar else LogProgress()
    )
    engine = Engine(config, host, progress, redactor, executor)
    try:
        report = asyncio.run(_with_signals(engine, RunOptions(only, args.dry_run)))
    finally:
        progress.close()
    if args.dry_run:
        _print_plan(report, config)
    elif json_lines:
        _log_summary(report, config)
    else:
        _print_summary(report, config)
    cubes_ok = True
    if args.cubes and not args.dry_run:
        ran = {a.source for a in report.assets}
        fed = [n for n, c in config.cubes.items() if c.enabled and ran & set(c.from_)]
        cubes_ok = run_cubes(config, host, fed, report.run_id)
    return EXIT_OK if report.clean and cubes_ok else EXIT_FAILED


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


def _print_plan(report: RunReport, config: Config) -> None:
    for asset in report.assets:
        size = human_bytes(asset.size) if asset.size is not None else "size unknown"
        if asset.status == "failed":
            print(f"{asset.source}: {asset.error}")
        else:
            print(f"{asset.source}/{asset.key}  {size}  {asset.url}")
    planned = [a for a in report.assets if a.status == "planned"]
    known = sum(a.size or 0 for a in planned)
    print(f"would fetch {len(planned)} assets ({human_bytes(known)} of known size)")
    for line in plan_notes(planned, config):
        print(line)


def _log_summary(report: RunReport, config: Config) -> None:
    """The run's outcome as one JSON log line (what a monitor reads)."""
    where = f"{config.store.logs.rstrip('/')}/runs/{report.run_id}.json"
    fields = {"run_id": report.run_id, "totals": asdict(report.totals), "report": where}
    level = logging.INFO if report.clean else logging.WARNING
    log.log(level, "run %s: %s", report.run_id, report.status, extra=fields)


def _print_summary(report: RunReport, config: Config) -> None:
    table = Table(title=f"run {report.run_id}: {report.status}")
    for column in ("source", "stored", "unchanged", "quarantined", "failed", "skipped", "bytes"):
        table.add_column(column, justify="left" if column == "source" else "right")
    by_source: dict[str, dict[str, int]] = {}
    for asset in report.assets:
        counts = by_source.setdefault(
            asset.source,
            dict.fromkeys(("stored", "unchanged", "quarantined", "failed", "skipped", "bytes"), 0),
        )
        counts[asset.status] = counts.get(asset.status, 0) + 1
        if asset.status == "stored":
            counts["bytes"] += asset.size or 0
    for source, counts in by_source.items():
        table.add_row(
            source,
            *(
                str(counts[c]) if c != "bytes" else human_bytes(counts[c])
                for c in ("stored", "unchanged", "quarantined", "failed", "skipped", "bytes")
            ),
        )
    Console(width=120).print(table)
    for asset in report.assets:
        if asset.status in ("failed", "quarantined"):
            print(f"{asset.status}: {asset.source}/{asset.key or '-'}: {asset.error}")
    _print_skipped(report)
    print(f"report: {config.store.logs.rstrip('/')}/runs/{report.run_id}.json")


def _print_skipped(report: RunReport, shown: int = 20) -> None:
    skipped = [a for a in report.assets if a.status == "skipped"]
    for asset in skipped[:shown]:
        print(f"skipped: {asset.source}/{asset.key or '-'}: {asset.error}")
    if len(skipped) > shown:
        print(f"… and {len(skipped) - shown} more skipped (the report lists them all)")


if __name__ == "__main__":
    sys.exit(main())
