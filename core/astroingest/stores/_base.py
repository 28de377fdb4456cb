"""The store contract: write an object as a stream, then commit it whole or not at all."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astroingest._ledger import Ledger


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None = None


class ObjectWriter(abc.ABC):
    """A pending object. Nothing is visible under its key until ``commit``.

    Used as ``async with``: leaving the block without a commit aborts, so errors,
    cancellation and Ctrl-C never leave a partial object behind.
    """

    key: str

    @abc.abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    async def commit(self, sha256: str | None = None) -> None:
        """Make the object visible under its key, atomically."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Discard everything written; idempotent."""

    @abc.abstractmethod
    async def divert(self, store: Store, key: str, sha256: str | None = None) -> None:
        """Commit what was written to another store and key instead (quarantine)."""

    async def __aenter__(self) -> ObjectWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.abort()


class Store(abc.ABC):
    """An object store rooted at a URL (``file://…``, ``s3://bucket/prefix``)."""

    url: str

    @abc.abstractmethod
    async def open_writer(
        self, key: str, *, size: int | None = None, sha256: str | None = None
    ) -> ObjectWriter:
        """A writer for ``key``. ``size`` and ``sha256`` are what the source published, if
        anything: hints for part sizing and metadata, verified again at commit."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None: ...

    @abc.abstractmethod
    def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    async def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object (a report, a manifest) atomically."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    async def object_sha256(self, key: str) -> str | None:
        """The sha256 recorded with the object, when the store keeps one."""
        info = await self.stat(key)
        return info.sha256 if info else None

    def bind_ledger(self, ledger: Ledger) -> None:
        """Let the store keep resumable state (S3 multipart uploads) in the run's ledger."""
        return None  # optional: stores without such state need nothing

    async def close(self) -> None:
        """Release connections; the store may not be used afterwards."""
        return None  # optional: stores without connections need nothing

    def local_root(self) -> Path | None:
        """The directory behind this store when it is on local disk, else None."""
        return None

    async def recover(self) -> int:
        """Clean up after writers that died without commit or abort (kill -9).

        Returns how many leftovers were removed. Writers of live processes are left alone.
        """
        return 0


StoreFactory = Callable[[str, Mapping[str, Any]], Store]


@dataclass(frozen=True, slots=True)
class StoreType:
    """A store registered through ``astroingest_stores`` for one URL scheme.

    ``open(url, options)`` gets the resolved URL and the ``[store]`` table's extra
    options (``endpoint_url`` and the like).
    """

    scheme: str
    open: StoreFactory
    description: str = ""
