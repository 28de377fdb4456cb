"""An example astroingest plugin: ``plugin = "example.listing"``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

from pydantic import field_validator

import astroingest
from astroingest import Asset, PlanContext, SourceConfig, SourceType


class ListingConfig(SourceConfig):
    listing: str
    media_type: str | None = None

    @field_validator("listing")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


async def plan(config: ListingConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    response = await ctx.client.get(config.listing)
    for line in response.text.splitlines():
        path = line.split("#", 1)[0].strip()
        if path:
            yield Asset(url=urljoin(config.listing, path), key=path, media_type=config.media_type)


@astroingest.hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [SourceType("example.listing", ListingConfig, plan, "files named in a text listing")]
