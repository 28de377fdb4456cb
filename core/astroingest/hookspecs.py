"""The hooks a plugin can implement.

Every hook is synchronous and declarative: it returns typed objects that the host
registers. The objects themselves do the async work, with the one ``httpx.AsyncClient``
the engine owns. Implement any subset; a plugin is a module (or object) with
``@astroingest.hookimpl`` functions, listed under the ``astroingest`` entry-point group::

    [project.entry-points.astroingest]
    myarchive = "myarchive_astroingest"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from astroingest._hosts import HostLimit
    from astroingest._sources import SourceType
    from astroingest.commands import Command
    from astroingest.cubes._converters import ConverterType
    from astroingest.doctor import DoctorCheck
    from astroingest.stores._base import StoreType
    from astroingest.validation._base import ValidatorType

_hookspec = pluggy.HookspecMarker("astroingest")


@_hookspec
def astroingest_source_types() -> list[SourceType[Any]]:  # type: ignore[empty-body]
    """Source types this plugin provides; each is used as ``plugin = "<name>"`` in sources.toml.

    A source type pairs a pydantic config model (a subclass of ``SourceConfig``) with an
    async ``plan`` function yielding the assets to fetch. Names are global: two
    plugins registering the same name is an error naming both distributions.

    Example::

        from collections.abc import AsyncIterator

        import astroingest
        from astroingest import Asset, PlanContext, SourceConfig, SourceType


        class NumbersConfig(SourceConfig):
            count: int = 3


        async def plan(config: NumbersConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
            base = config.base_url or "https://numbers.example.org"
            for i in range(config.count):
                yield Asset(url=f"{base}/{i}.csv", key=f"{i}.csv", media_type="text/csv")


        @astroingest.hookimpl
        def astroingest_source_types() -> list[SourceType]:
            return [SourceType("example.numbers", NumbersConfig, plan)]
    """


@_hookspec
def astroingest_stores() -> list[StoreType]:  # type: ignore[empty-body]
    """Stores this plugin provides, one per URL scheme (``file``, ``s3``, …).

    Example::

        import astroingest
        from astroingest.stores import StoreType
        from mystore import MemoryStore


        @astroingest.hookimpl
        def astroingest_stores() -> list[StoreType]:
            return [StoreType("mem", lambda url, options: MemoryStore(url), "in-memory store")]
    """


@_hookspec
def astroingest_validators() -> list[ValidatorType]:  # type: ignore[empty-body]
    """Streaming validators, chosen per asset by extension, then media type.

    Example::

        import astroingest
        from astroingest.validation import Check, QualityReport, ValidatorType, report


        class PDSLabel:
            def __init__(self) -> None:
                self.head = b""

            def feed(self, chunk: bytes) -> None:
                if len(self.head) < 64:
                    self.head += chunk[: 64 - len(self.head)]

            def finish(self) -> QualityReport:
                ok = self.head.startswith(b"PDS_VERSION_ID")
                return report("pds3", [Check("magic", ok, critical=True)])


        @astroingest.hookimpl
        def astroingest_validators() -> list[ValidatorType]:
            return [ValidatorType("pds3", PDSLabel, extensions=(".lbl",))]
    """


@_hookspec
def astroingest_host_limits() -> list[HostLimit]:  # type: ignore[empty-body]
    """Politeness defaults for hosts this plugin knows: connections and requests per second.

    Users override them with ``[hosts."<host>"]`` tables in sources.toml; the strictest
    plugin default wins when two plugins name the same host.

    Example::

        import astroingest
        from astroingest import HostLimit


        @astroingest.hookimpl
        def astroingest_host_limits() -> list[HostLimit]:
            return [HostLimit("eutils.ncbi.nlm.nih.gov", connections=3, rate=3.0)]
    """


@_hookspec
def astroingest_converters() -> list[ConverterType]:  # type: ignore[empty-body]
    """Cube converters: used as ``converter = "<name>"`` in ``[cubes.NAME]`` tables.

    A converter reads one raw asset (a local file) and appends batches of arrays to the
    cube; the writer keeps statistics, versions and the training manifest.

    Example::

        import numpy as np

        import astroingest
        from astroingest.cubes import Array, Batch, ConverterType


        def convert(item, writer):
            values = np.loadtxt(item.path, ndmin=1)
            writer.append(Batch({"value": Array(("row",), values, {"units": "K"})}))


        @astroingest.hookimpl
        def astroingest_converters() -> list[ConverterType]:
            return [ConverterType("numbers", convert, extensions=(".txt",), sample_dim="row")]
    """


@_hookspec
def astroingest_doctor_checks() -> list[DoctorCheck]:  # type: ignore[empty-body]
    """Checks ``astroingest doctor`` runs: is a credential there, does the archive take it.

    Each check is an async function of a ``DoctorContext`` (the loaded config, an HTTP
    client, ``online``) returning one ``CheckResult`` per thing it looked at, or none.
    Call the archive only when ``ctx.online`` is true, and never put a secret's value in
    a result.

    Example::

        import astroingest
        from astroingest.doctor import CheckResult, DoctorCheck, DoctorContext


        async def token_accepted(ctx: DoctorContext) -> list[CheckResult]:
            results = []
            for source in ctx.sources("example.archive"):
                if not ctx.online:
                    results.append(CheckResult.skipped("runs with --online", subject=source.name))
                    continue
                response = await ctx.client.get(
                    "https://archive.example.org/whoami",
                    headers={"Authorization": f"Bearer {source.config.token}"},
                )
                if response.status_code == 200:
                    results.append(CheckResult.passed("token accepted", subject=source.name))
                else:
                    results.append(
                        CheckResult.failed(
                            f"token refused (HTTP {response.status_code})",
                            "renew the token and set ARCHIVE_TOKEN",
                            subject=source.name,
                        )
                    )
            return results


        @astroingest.hookimpl
        def astroingest_doctor_checks() -> list[DoctorCheck]:
            return [DoctorCheck("example token", token_accepted)]
    """


@_hookspec
def astroingest_commands() -> list[Command]:  # type: ignore[empty-body]
    """Subcommands of ``astroingest``; each becomes ``astroingest <name>``.

    A command names itself, adds its arguments to its argparse parser and runs with the
    parsed arguments, returning the exit status. Keep the module light: it is imported
    on every invocation, so import heavy packages inside ``run``. A name the host
    already uses (``run``, ``check``…) is ignored.

    Example::

        import argparse
        from pathlib import Path

        import astroingest
        from astroingest.commands import Command


        def add_arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--catalog", type=Path, required=True, help="catalog file")


        def run(args: argparse.Namespace) -> int:
            rows = args.catalog.read_text().splitlines()
            print(f"{args.catalog}: {len(rows)} rows")
            return 0


        @astroingest.hookimpl
        def astroingest_commands() -> list[Command]:
            return [Command("count", "count a catalog's rows", add_arguments, run)]
    """
