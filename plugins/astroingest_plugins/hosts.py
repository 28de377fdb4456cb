"""Politeness defaults from the archives' published limits (users override with [hosts."…"])."""

from __future__ import annotations

from astroingest import HostLimit, hookimpl

PUBLISHED_LIMITS = (
    # NCBI: at most 3 requests/s without an API key (10 with one; see the ncbi plugin).
    HostLimit("eutils.ncbi.nlm.nih.gov", connections=3, rate=3.0),
    # Copernicus Data Space: 4 concurrent downloads per account.
    HostLimit("download.dataspace.copernicus.eu", connections=4),
    HostLimit("zipper.dataspace.copernicus.eu", connections=4),
)


@hookimpl
def astroingest_host_limits() -> list[HostLimit]:
    return list(PUBLISHED_LIMITS)
