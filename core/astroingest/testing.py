"""A pytest plugin for people writing astroingest plugins (loaded automatically by pytest).

Fixtures:

``astroingest_host``
    A fresh plugin host with only the built-in plugins: no entry points, so the
    test sees exactly what it registers.
``register_plugin``
    ``register_plugin(obj, name=None)`` registers a plugin (a module or an object
    with ``@hookimpl`` methods) for the current test only.
``local_archive``
    A real HTTP server on 127.0.0.1 (:class:`ArchiveServer`) serving what the test
    ``add()``-s, with ETag/Last-Modified, conditional and range requests, latency and
    injected faults (``fault(path, "503", "429:1", "reset", "truncate", …)``).
``astroingest_run``
    ``astroingest_run(sources_toml_text, dry_run=False) -> RunReport`` runs the real engine on a
    sources.toml written to a temporary directory (store under it), with the
    host above, and returns the run report.

Example::

    def test_my_source(local_archive, register_plugin, astroingest_run):
        import my_plugin

        register_plugin(my_plugin)
        url = local_archive.add("data/a.csv", b"x,y\\n1,2\\n", content_type="text/csv")
        report = astroingest_run(f'''
            [sources.mine]
            plugin = "my.source"
            url = "{url}"
        ''')
        assert report.totals.stored == 1
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply
from astroingest._config import load_config
from astroingest._engine import Engine, RunOptions
from astroingest._plugins import Host, load_host
from astroingest._progress import LogProgress
from astroingest._redact import Redactor
from astroingest._report import RunReport

__all__ = ["ArchiveRequest", "ArchiveServer", "Reply"]


@pytest.fixture
def astroingest_host() -> Host:
    """A plugin host with the built-ins only."""
    return load_host(entry_points=False)


@pytest.fixture
def register_plugin(astroingest_host: Host) -> Iterator[Callable[..., str]]:
    """Register a plugin with ``astroingest_host`` for this test only."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        registered = astroingest_host.register(plugin, name)
        names.append(registered)
        return registered

    yield register
    for name in reversed(names):
        if astroingest_host.pm.get_plugin(name) is not None:
            astroingest_host.unregister(name)


@pytest.fixture
def local_archive() -> Iterator[ArchiveServer]:
    """A started ArchiveServer on 127.0.0.1 with an ephemeral port."""
    with ArchiveServer() as server:
        yield server


@pytest.fixture
def astroingest_run(astroingest_host: Host, tmp_path: Path) -> Callable[..., RunReport]:
    """Run the real engine on a sources.toml text; the store lives under tmp_path."""

    def run(
        sources_toml: str,
        *,
        only: tuple[str, ...] = (),
        dry_run: bool = False,
        name: str = "sources.toml",
    ) -> RunReport:
        path = tmp_path / name
        path.write_text(textwrap.dedent(sources_toml))
        config = load_config(path, astroingest_host)
        redactor = Redactor(config.secrets)
        engine = Engine(config, astroingest_host, LogProgress(), redactor)
        return asyncio.run(engine.run(RunOptions(only=only, dry_run=dry_run)))

    return run
