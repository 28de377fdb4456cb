"""The store contract: write an object as a stream, then commit it whole or not at all."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    async def open_writer(self, key: str) -> ObjectWriter: ...

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None: ...

    @abc.abstractmethod
    def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    async def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object (a report, a manifest) atomically."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

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
