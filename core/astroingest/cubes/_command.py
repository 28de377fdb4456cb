"""`astroingest cube`: bring cubes up to date; also what `astroingest run --cubes` calls."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from astroingest._config import Config
from astroingest._plugins import Host
from astroingest._report import new_run_id
from astroingest.cubes._stage import CubeResult, build_cubes, select_cubes


def add_cube_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    cube = commands.add_parser(
        "cube", parents=[common], help="turn raw assets into versioned Zarr cubes"
    )
    cube.add_argument("--sources", type=Path, required=True, help="path to sources.toml")
    cube.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="only this cube (repeatable)"
    )


def cube_command(config: Config, host: Host, args: argparse.Namespace) -> bool:
    """True when every cube is up to date (committed or unchanged)."""
    names = select_cubes(config, args.only)
    return run_cubes(config, host, names, new_run_id())


def run_cubes(config: Config, host: Host, names: Sequence[str], run_id: str) -> bool:
    from astroingest._engine import Engine
    from astroingest._progress import LogProgress
    from astroingest._redact import Redactor

    if not names:
        print("no cubes configured ([cubes.NAME] tables in sources.toml)")
        return True
    opener = Engine(config, host, LogProgress(), Redactor()).open_store
    results = asyncio.run(build_cubes(config, host, names, run_id, opener))
    print_results(results)
    return all(r.status != "failed" for r in results)


def print_results(results: Sequence[CubeResult]) -> None:
    table = Table(title="cubes")
    for column in ("cube", "status", "version", "new samples", "inputs"):
        table.add_column(column, justify="left" if column in ("cube", "status") else "right")
    for r in results:
        status = r.status + (" (rebuilt)" if r.rebuilt else "")
        version = "-" if r.version is None else str(r.version)
        table.add_row(r.name, status, version, str(r.samples), str(r.inputs))
    Console(width=120).print(table)
    for r in results:
        if r.error:
            print(f"failed: cube {r.name}: {r.error}")
