"""The one bridge from the trainer's synchronous code to astroingest's async stores.

Each process gets one event loop on a background thread; every store call runs there
(``run``). Stores hold connections bound to that loop, so they are opened once per
process and URL, and opened afresh in a forked or spawned child (the PID is checked).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from astroingest._exceptions import StoreError
from astroingest.stores import ObjectInfo, ObjectWriter, Store

T = TypeVar("T")

_guard = threading.Lock()
_loop: tuple[int, asyncio.AbstractEventLoop] | None = None
_stores: dict[tuple[str, tuple[tuple[str, Any], ...]], Store] = {}


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _guard:
        if _loop is None or _loop[0] != os.getpid():
            _stores.clear()  # a fork's copies belong to the parent's loop
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="astroingest-io", daemon=True)
            thread.start()
            _loop = (os.getpid(), loop)
        return _loop[1]


def submit(coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Start ``coro`` on the process's loop; the future completes when it does."""
    return asyncio.run_coroutine_threadsafe(coro, _event_loop())


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the process's loop and wait for it."""
    return submit(coro).result()


def open_store(url: str, options: Mapping[str, Any] | None = None) -> Store:
    """The store at ``url`` (``file://`` or ``s3://``, or any scheme a plugin registers)."""
    settings = {k: v for k, v in (options or {}).items() if v is not None}
    key = (url, tuple(sorted(settings.items())))
    _event_loop()  # resets the cache in a new process
    with _guard:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = _open(url, settings)
    return store


def _open(url: str, options: Mapping[str, Any]) -> Store:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "file":
        from astroingest.stores.local import LocalStore, path_from_url

        return LocalStore(path_from_url(url))
    if scheme == "s3":
        from astroingest.stores.s3 import open_s3_store

        return open_s3_store(url, options)
    from astroingest._plugins import load_host

    types = load_host().stores()
    if scheme not in types:
        raise StoreError(f"no store for {url!r} (known schemes: {', '.join(sorted(types))})")
    return types[scheme].open(url, options)


async def _read_all(store: Store, key: str) -> bytes:
    parts = [chunk async for chunk in store.read(key)]
    return b"".join(parts)


async def _list(store: Store, prefix: str) -> list[ObjectInfo]:
    return [info async for info in store.list(prefix)]


def read_bytes(store: Store, key: str) -> bytes:
    return run(_read_all(store, key))


def list_objects(store: Store, prefix: str = "") -> list[ObjectInfo]:
    return run(_list(store, prefix))


def put_bytes(store: Store, key: str, data: bytes) -> None:
    run(store.put_bytes(key, data))


def delete(store: Store, key: str) -> None:
    run(store.delete(key))


def stat(store: Store, key: str) -> ObjectInfo | None:
    return run(store.stat(key))


class UploadStream(io.RawIOBase):
    """A write-only file that streams into a store object (``torch.save`` writes to it).

    Bytes go to the store's writer in ``part`` sized pieces, hashed on the way; ``commit``
    makes the object visible whole. Leaving a ``with`` block without a commit aborts,
    so a failure or a kill never leaves a partial object under the key.
    """

    def __init__(self, store: Store, key: str, part: int = 8 * 1024 * 1024) -> None:
        super().__init__()
        self.key = key
        self.size = 0
        self._writer: ObjectWriter = run(store.open_writer(key))
        self._part = part
        self._buffer = bytearray()
        self._sha256 = hashlib.sha256()
        self._committed = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self._sha256.update(view)
        self.size += len(view)
        if len(self._buffer) >= self._part:
            self._send()
        return len(view)

    def _send(self) -> None:
        if self._buffer:
            run(self._writer.write(bytes(self._buffer)))
            self._buffer.clear()

    def commit(self) -> str:
        """Upload the rest and make the object visible; returns its sha256."""
        self._send()
        digest = self._sha256.hexdigest()
        run(self._writer.commit(digest))
        self._committed = True
        return digest

    def close(self) -> None:
        if not self._committed and not self.closed:
            run(self._writer.abort())
        super().close()

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _close_all(stores: list[Store]) -> None:
    for store in stores:
        await store.close()


def _shutdown() -> None:
    if _loop is None or _loop[0] != os.getpid():
        return
    stores, loop = list(_stores.values()), _loop[1]
    _stores.clear()
    # at exit, a store that cannot close cleanly is not worth a traceback
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(_close_all(stores), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)


atexit.register(_shutdown)
