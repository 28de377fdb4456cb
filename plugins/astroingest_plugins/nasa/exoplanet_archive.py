"""``plugin = "nasa.exoplanet_archive"``: the NASA Exoplanet Archive's TAP service.

One ADQL query against ``ps`` (Planetary Systems, one row per planet per reference; add
``where default_flag = 1`` for one row per planet), ``pscomppars`` (one row per planet,
composite values), ``toi``, ``stellarhosts``, ``keplernames``, ``k2pandc``… ::

    [sources.exoplanets]
    plugin = "nasa.exoplanet_archive"
    query = "select pl_name, pl_eqt, st_teff from pscomppars"
    format = "csv"

The archive documents sync queries as ``GET /TAP/sync?query=<ADQL>&format=<fmt>`` (lower-case
names, no REQUEST/LANG), which is the asset URL, and says sync "should be adequate" for its
tables, so ``mode`` defaults to ``"sync"``; ``"async"`` runs a UWS job at ``/TAP/async`` and
``"auto"`` follows :func:`astroingest_plugins.tap.choose_mode`. Everything else (keys,
polling, error documents, OVERFLOW) is :mod:`astroingest_plugins.tap`.

Provenance carries the table, query and format, the archive's citation page, and the
table's DOI where the archive publishes one (its DOI page lists ``ps`` as 10.26133/NEA12 and
``pscomppars`` as 10.26133/NEA13).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

from pydantic import Field

from astroingest import Asset, PlanContext, SourceType, hookimpl
from astroingest_plugins.tap import (
    DEFAULT_SYNC_ROW_LIMIT,
    Format,
    Mode,
    TapQueryConfig,
    TapService,
    plan_query,
    table_of,
)

DEFAULT_BASE_URL: Final = "https://exoplanetarchive.ipac.caltech.edu/TAP"
PROVIDER: Final = "NASA Exoplanet Archive"
CITATION: Final = "https://exoplanetarchive.ipac.caltech.edu/docs/doi.html"
TABLE_DOIS: Final = {"ps": "10.26133/NEA12", "pscomppars": "10.26133/NEA13"}
"""DOIs from the archive's "Citing the NASA Exoplanet Archive With DOIs" page."""


class ExoplanetArchiveConfig(TapQueryConfig):
    """One ADQL query against the archive; ``base_url`` overrides the TAP root."""

    format: Format = "csv"
    """Result format: ``"csv"`` (default), ``"votable"`` or ``"json"`` (a bare array of rows)."""
    mode: Mode = "sync"
    """``"sync"`` (default: the archive says sync suffices for its tables), ``"async"`` or
    ``"auto"`` (async unless ``TOP n``/``maxrec`` keep the result within ``sync_row_limit``)."""
    sync_row_limit: int = Field(default=DEFAULT_SYNC_ROW_LIMIT, ge=1)
    """For ``mode = "auto"`` only: the most rows a query may return and still run sync."""


def service(config: ExoplanetArchiveConfig) -> TapService:
    return TapService(
        base=config.base_url or DEFAULT_BASE_URL,
        provider=PROVIDER,
        upper_case_params=False,
        doquery_params=False,
        sync_row_limit=config.sync_row_limit,
    )


def citation(query: str) -> dict[str, str]:
    """The archive's citation page, and the DOI of the queried table when it has one."""
    table = (table_of(query) or "").lower()
    doi = TABLE_DOIS.get(table)
    return {"citation": CITATION, **({"doi": doi} if doi else {})}


async def plan(config: ExoplanetArchiveConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    async for asset in plan_query(
        ctx,
        service(config),
        config.query,
        config.format,
        config.mode,
        config.maxrec,
        config.polling(),
        citation(config.query),
    ):
        yield asset


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [
        SourceType(
            "nasa.exoplanet_archive",
            ExoplanetArchiveConfig,
            plan,
            "NASA Exoplanet Archive TAP (ps, pscomppars, toi…): one ADQL query",
        )
    ]
