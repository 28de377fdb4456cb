"""``plugin = "files"``: local paths and globs, through the same checks, validation and ledger."""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiofiles
from pydantic import Field

from astroingest import Asset, Conditions, Download, PlanContext, SourceConfig, SourceType, hookimpl

CHUNK = 1 << 20


class FilesConfig(SourceConfig):
    paths: list[str] = Field(min_length=1)
    media_type: str | None = None


async def plan(config: FilesConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    for pattern in config.paths:
        absolute = str(ctx.config_dir / pattern)  # an absolute pattern stays absolute
        base = _static_prefix(absolute)
        files = [
            f for f in await asyncio.to_thread(_expand, absolute) if not _inside(f, ctx.store_dirs)
        ]
        if not files:
            ctx.log.warning("no files match %s", pattern)
        for path in files:
            key = path.name if path == base else path.relative_to(base).as_posix()
            yield Asset(
                url=path.absolute().as_uri(),
                key=key,
                media_type=config.media_type,
                opener=open_file,
            )


def _inside(path: Path, dirs: tuple[Path, ...]) -> bool:
    """A store's own files (say, under a ``**`` glob beside the data) are never ingested."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(d.resolve()) for d in dirs)


def _expand(pattern: str) -> list[Path]:
    return [Path(m) for m in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(m)]


def _static_prefix(pattern: str) -> Path:
    """The directory a glob starts from: everything before its first magic segment."""
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return Path(*parts[:i])
    return Path(pattern)


def file_etag(stat: os.stat_result) -> str:
    """Stands in for an HTTP ETag: a file whose size and mtime are the same is not re-read."""
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'


@asynccontextmanager
async def open_file(asset: Asset, conditions: Conditions) -> AsyncIterator[Download]:
    async with aiofiles.open(Path(unquote(urlsplit(asset.url).path)), "rb") as f:
        stat = os.fstat(f.fileno())
        etag = file_etag(stat)
        if conditions.etag == etag:
            yield Download(chunks=None, not_modified=True, etag=etag)
            return
        read = [0]

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await f.read(CHUNK):
                read[0] += len(chunk)
                yield chunk

        # A file still being written reads longer or shorter than its size at open:
        # the engine sees the mismatch and tries again.
        yield Download(
            chunks=chunks(), etag=etag, content_length=stat.st_size, raw_bytes=lambda: read[0]
        )


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [
        SourceType("files", FilesConfig, plan, "local files and globs (data a lab already has)")
    ]
