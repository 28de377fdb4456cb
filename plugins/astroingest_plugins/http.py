"""``plugin = "http"``: a list of URLs, or an index URL returning a JSON list of them."""

from __future__ import annotations

import hashlib
import posixpath
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from astroingest import Asset, PlanContext, SourceConfig, SourceType, hookimpl
from astroingest._sources import check_http_url

HEX64 = r"^[0-9a-fA-F]{64}$"
HEX32 = r"^[0-9a-fA-F]{32}$"


class UrlEntry(BaseModel):
    """One URL with what is known about it in advance."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    url: str
    sha256: str | None = Field(default=None, pattern=HEX64)
    md5: str | None = Field(default=None, pattern=HEX32)
    size: int | None = Field(default=None, ge=0)
    key: str | None = None
    media_type: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value)


class IndexEntry(UrlEntry):
    """An index entry; lenient about extra fields that other tools put in their indexes."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class HttpConfig(SourceConfig):
    urls: list[str | UrlEntry] = []
    index: str | None = None
    headers: dict[str, str] = {}
    media_type: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> HttpConfig:
        if bool(self.urls) == bool(self.index):
            raise ValueError('give either urls = [...] or index = "<url>", not both or neither')
        return self

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, values: list[str | UrlEntry]) -> list[str | UrlEntry]:
        for value in values:
            if isinstance(value, str):
                check_http_url(value)
        return values

    @field_validator("index")
    @classmethod
    def _check_index(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)


_INDEX = TypeAdapter(list[IndexEntry])


async def plan(config: HttpConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    entries = [UrlEntry(url=u) if isinstance(u, str) else u for u in config.urls]
    if config.index:
        entries = await _read_index(config.index, config, ctx)
    names = [entry.key or key_from_url(entry.url) for entry in entries]
    index_origin = _origin(config.index) if config.index else None
    counts = Counter(names)
    for entry, name in zip(entries, names, strict=True):
        # A name shared by several URLs gets a suffix from its own URL, so each key keeps
        # naming the same URL's bytes whatever the order of the list.
        key = name if counts[name] == 1 or entry.key else _suffixed(name, entry.url)
        yield Asset(
            url=entry.url,
            key=key,
            size=entry.size,
            sha256=entry.sha256.lower() if entry.sha256 else None,
            md5=entry.md5.lower() if entry.md5 else None,
            media_type=entry.media_type or config.media_type,
            # Headers (credentials, often) go to the index's own origin only: a remote
            # index naming another host must not collect them.
            headers=config.headers if index_origin in (None, _origin(entry.url)) else {},
        )


async def _read_index(index: str, config: HttpConfig, ctx: PlanContext) -> list[UrlEntry]:
    document: Any = await ctx.get_json(index, headers=config.headers)
    if not isinstance(document, list):
        raise ValueError(f"index {index} is not a JSON list")
    items = [{"url": item} if isinstance(item, str) else item for item in document]
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            items[i] = {**item, "url": urljoin(index, item["url"])}  # relative to the index
    try:
        return list(_INDEX.validate_python(items))
    except ValueError as error:
        first = str(error).splitlines()[1:3]
        raise ValueError(
            f"index entries must be {{url, sha256?, size?}}: {' '.join(first)}"
        ) from None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port)


def key_from_url(url: str) -> str:
    """The last path segment, or the host when the path has none."""
    parts = urlsplit(url)
    name = posixpath.basename(unquote(parts.path.rstrip("/")))
    return name or parts.hostname or "index"


def _suffixed(key: str, url: str) -> str:
    stem, dot, ext = key.rpartition(".")
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return f"{stem}-{digest}.{ext}" if dot and stem else f"{key}-{digest}"


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [SourceType("http", HttpConfig, plan, "a list of URLs, or a JSON index of them")]
