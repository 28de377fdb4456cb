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
