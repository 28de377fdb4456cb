"""What a source plans and what an opener hands the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Conditions:
    """What the ledger remembers of an asset's last fetch, for a conditional request."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(slots=True)
class Download:
    """An opened body: either not modified, or chunks to stream.

    ``raw_bytes`` reports how many bytes came over the wire so far (before any
    Content-Encoding was undone); the engine compares it with ``content_length``
    to catch truncated bodies.
    """

    chunks: AsyncIterator[bytes] | None
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None
    content_length: int | None = None
    media_type: str | None = None
    raw_bytes: Callable[[], int] | None = None


Opener = Callable[["Asset", Conditions], AbstractAsyncContextManager[Download]]
"""Opens an asset's body. The default opener is an HTTP GET through the engine's polite client."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One object to fetch and store.

    ``key`` is relative to the source's prefix and is sanitised again by the store; the
    same query should give the same key on every run.
    ``size``, ``sha256``, ``md5`` and ``checksums`` (other algorithms: ``sha1``,
    ``sha512``, ``blake2b``, ``blake3``…, lower-case hex) are what the archive published;
    a mismatch fails the asset.
    ``headers`` and ``auth`` (an ``httpx.Auth``, e.g. one that refreshes an OAuth2 token)
    may carry credentials: they are sent, never logged or reported.
    ``provenance`` (provider, query, ids, DOI…, without secrets) goes into the ledger
    and the run report.
    ``opener`` replaces the HTTP GET for assets that are not plain URLs (local files,
    archives with their own download protocol).
    """

    url: str
    key: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)
    media_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    auth: httpx.Auth | None = field(default=None, repr=False, compare=False)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    opener: Opener | None = field(default=None, repr=False, compare=False)
