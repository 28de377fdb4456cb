"""The embedded local store: temp file beside the target, fsync, atomic rename.

Every writer leaves a journal entry naming its temp file and process, so that a run
killed with kill -9 can be cleaned up by the next one (``recover``) without scanning
the whole tree.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiofiles

from astroingest._exceptions import StoreError, UnsafeKeyError
from astroingest._hookimpl import hookimpl
from astroingest._keys import sanitize_key
from astroingest.stores._base import ObjectInfo, ObjectWriter, Store, StoreType

JOURNAL = ".astroingest-pending"
TEMP_SUFFIX = ".astroingest-part"


def path_from_url(url: str) -> Path:
    """The directory a ``file://`` URL names; relative URLs must be resolved by the caller."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise StoreError(f"not a file:// URL: {url}")
    return Path(unquote(parts.netloc + parts.path))


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.url = self.root.as_uri()

    def path_for(self, key: str) -> Path:
        safe = sanitize_key(key)
        path = (self.root / safe).absolute()
        if not path.is_relative_to(self.root) or path == self.root:
            raise UnsafeKeyError(f"key {key!r} escapes {self.url}")
        return path

    def local_root(self) -> Path:
        return self.root

    async def open_writer(
        self, key: str, *, size: int | None = None, sha256: str | None = None
    ) -> LocalWriter:
        return LocalWriter(self, key, self.path_for(key))

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self.path_for(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        return ObjectInfo(key=key, size=st.st_size)

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        async with aiofiles.open(self.path_for(key), "rb") as f:
            while chunk := await f.read(chunk_size):
                yield chunk

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for key, size in await asyncio.to_thread(self._list, prefix):
            yield ObjectInfo(key, size)

    def _list(self, prefix: str) -> builtins.list[tuple[str, int]]:
        found: builtins.list[tuple[str, int]] = []
        for path in self.root.rglob("*"):
            relative = path.relative_to(self.root)
            if JOURNAL in relative.parts or path.name.endswith(TEMP_SUFFIX):
                continue
            key = relative.as_posix()
            if key.startswith(prefix) and path.is_file():
                found.append((key, path.stat().st_size))
        return sorted(found)

    async def put_bytes(self, key: str, data: bytes) -> None:
        writer = await self.open_writer(key)
        async with writer:
            await writer.write(data)
            await writer.commit()

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path_for(key).unlink)

    async def recover(self) -> int:
        return await asyncio.to_thread(self._recover)

    def _recover(self) -> int:
        journal = self.root / JOURNAL
        if not journal.is_dir():
            return 0
        removed = 0
        for entry in journal.glob("*.json"):
            try:
                record = json.loads(entry.read_text())
            except (OSError, ValueError):
                continue
            if _writer_alive(record, journal):
                continue
            temp = self.root / record["temp"]
            if temp.is_relative_to(self.root):
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
                    removed += 1
            entry.unlink(missing_ok=True)
        for lock in journal.glob("*.lock"):
            _lock_held(lock)  # removes the lock files of processes that are gone
        return removed

    def adopt(self, temp: Path, key: str) -> None:
        """Move a finished temp file under ``key`` atomically (rename, or copy across disks)."""
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(temp, target)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            self._copy_in(temp, target)  # another filesystem: copy beside the target, rename
            temp.unlink(missing_ok=True)
        _fsync_dir(target.parent)

    def _copy_in(self, temp: Path, target: Path) -> None:
        staged = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            shutil.copyfile(temp, staged)
            _fsync_path(staged)
            os.replace(staged, target)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise


_process_locks: dict[Path, tuple[int, str, int]] = {}
_process_locks_guard = threading.Lock()


def _process_lock(journal: Path) -> str:
    """This process's lock file in ``journal``, held (flock) for the process's lifetime.

    The kernel drops the lock when the process dies however it dies, so a later run can
    tell a dead writer from a live one even where PIDs and host names repeat (containers).
    """
    with _process_locks_guard:
        held = _process_locks.get(journal)
        if held is not None and held[2] == os.getpid():  # not one inherited across fork
            return held[1]
        name = f"{os.getpid()}-{secrets.token_hex(4)}.lock"
        fd = os.open(journal / name, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _process_locks[journal] = (fd, name, os.getpid())
        return name


def _lock_held(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    lock.unlink(missing_ok=True)  # its process is gone: the lock file goes too
    return False


def _writer_alive(record: Mapping[str, Any], journal: Path) -> bool:
    if "lock" in record:
        return _lock_held(journal / str(record["lock"]))
    if record.get("host") != socket.gethostname():
        return True  # another machine's writer: not ours to judge
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        _fsync_path(path)


class LocalWriter(ObjectWriter):
    """Buffers up to ``BUFFER`` bytes before touching the disk.

    Small objects then cost one trip to a worker thread (journal, temp file, write, fsync,
    rename) instead of one per step; large ones are written a buffer at a time.
    """

    BUFFER = 512 * 1024

    def __init__(self, store: LocalStore, key: str, target: Path) -> None:
        self.store = store
        self.key = key
        self.target = target
        token = secrets.token_hex(8)
        self.temp = target.with_name(f".{target.name}.{token}{TEMP_SUFFIX}")
        self.entry = store.root / JOURNAL / f"{token}.json"
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._done = False
        # A cancelled await leaves its worker thread running: abort must wait for it, or
        # it would close a descriptor that thread still writes to (and the OS may have
        # handed that number to another writer by then).
        self._disk = threading.Lock()

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise StoreError(f"write after commit or abort: {self.key}")
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= self.BUFFER:
            await asyncio.to_thread(self._flush)

    async def commit(self, sha256: str | None = None) -> None:
        await asyncio.shield(asyncio.to_thread(self._commit_to, self.store, self.key))

    async def divert(self, store: Store, key: str, sha256: str | None = None) -> None:
        if isinstance(store, LocalStore):
            await asyncio.to_thread(self._commit_to, store, key)
            return
        await asyncio.to_thread(self._close)
        async with await store.open_writer(key) as other:
            async with aiofiles.open(self.temp, "rb") as f:
                while chunk := await f.read(1 << 20):
                    await other.write(chunk)
            await other.commit(sha256)
        await self.abort()

    def _open(self) -> int:
        self.entry.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "temp": str(self.temp.relative_to(self.store.root)),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "lock": _process_lock(self.entry.parent),
        }
        # The journal entry exists before the temp file, so no temp file is ever untracked.
        self.entry.write_text(json.dumps(record))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return self._fd

    def _flush(self) -> None:
        with self._disk:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._done:
            return
        fd = self._fd if self._fd is not None else self._open()
        for chunk in self._pending:
            _write_all(fd, chunk)
        self._pending.clear()
        self._pending_size = 0

    def _close(self) -> None:
        self._flush_locked()
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _commit_to(self, store: LocalStore, key: str) -> None:
        with self._disk:
            if self._done:
                raise StoreError(f"commit after abort: {self.key}")
            self._close()
            store.adopt(self.temp, key)
            self._finish()

    def _finish(self) -> None:
        self._done = True
        self._pending.clear()
        self.entry.unlink(missing_ok=True)

    async def abort(self) -> None:
        if self._done:
            return
        # Shielded so that a second Ctrl-C cannot leave the temp file behind.
        await asyncio.shield(asyncio.to_thread(self._abort))

    def _abort(self) -> None:
        with self._disk:
            if self._done:
                return
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)
            # Also after a failed commit, whose descriptor is already closed.
            self.temp.unlink(missing_ok=True)
            self._finish()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def open_local_store(url: str, options: Mapping[str, Any]) -> LocalStore:
    return LocalStore(path_from_url(url))


@hookimpl
def astroingest_stores() -> list[StoreType]:
    return [StoreType("file", open_local_store, "embedded local store (temp file + atomic rename)")]
