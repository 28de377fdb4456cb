"""Source types: a config model plus an async plan of assets."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from astroingest._assets import Asset
from astroingest._budget import parse_size
from astroingest._hosts import HostLimit, RateLimiter
from astroingest._http import PoliteClient
from astroingest._schedule import check_cron


def check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


class SourceConfig(BaseModel):
    """Keys every source takes. A source type's model subclasses this and adds its own.

    Strict: TOML types must match (``"16"`` is not ``16``); unknown keys are errors.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    plugin: str
    base_url: str | None = None
    concurrency: int | None = Field(default=None, ge=1, le=256)
    rate: float | None = Field(default=None, gt=0, le=1000)
    enabled: bool = True
    schedule: str | None = None
    min_quality: float | None = Field(default=None, ge=0, le=1)
    max_bytes: int | None = Field(default=None, ge=1)  # per run; "10 GiB" works too
    max_assets: int | None = Field(default=None, ge=1)  # per run

    @field_validator("base_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("schedule")
    @classmethod
    def _cron_schedule(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value)


ConfigT = TypeVar("ConfigT", bound=SourceConfig)


Finalizer = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class PlanContext:
    """What a plan function gets: its source's name, the polite client, where the config lives.

    ``client`` requests wait for their host's budget and are retried under the run's
    policy. ``dry_run`` is true under ``--dry-run``: plan, but start nothing that costs
    the archive real work (no async jobs submitted).
    """

    source: str
    client: PoliteClient
    config_dir: Path
    log: logging.Logger
    limiter: RateLimiter | None = None
    dry_run: bool = False
    finalizers: list[Finalizer] = field(default_factory=list)
    secret_sink: Callable[[Iterable[str]], None] | None = None
    store_dirs: tuple[Path, ...] = ()  # local store directories: never a source of data

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A polite, retried request counted against this source's rate too."""
        return await self.client.request(method, url, limiter=self.limiter, **kwargs)

    async def get_json(self, url: str, **kwargs: Any) -> Any:
        return (await self.request("GET", url, **kwargs)).json()

    def host_limit(self, limit: HostLimit) -> None:
        """Use ``limit`` for its host this run (unless the user set one in ``[hosts]``)."""
        self.client.budgets.prefer(limit)

    def add_secret(self, value: str) -> None:
        """Scrub ``value`` from logs, errors and reports (a token obtained at run time)."""
        if self.secret_sink is not None and value:
            self.secret_sink([value])

    def on_finish(self, finalizer: Finalizer) -> None:
        """Run ``finalizer`` once every asset of this source is done (delete a UWS job…).

        Its errors are logged, never fatal.
        """
        self.finalizers.append(finalizer)


PlanFunction = Callable[[ConfigT, PlanContext], AsyncIterator[Asset]]


@dataclass(frozen=True, slots=True)
class SourceType(Generic[ConfigT]):
    """A kind of source, used as ``plugin = "<name>"`` in sources.toml.

    ``plan(config, ctx)`` yields the assets to fetch; it may talk to the archive through
    ``ctx.client`` (searches, job submission, paging).
    """

    name: str
    config: type[ConfigT]
    plan: PlanFunction[ConfigT]
    description: str = ""
