"""A local disk cache of immutable objects with a size limit, least recently used out first.

The cube dataset keeps decoded, normalised blocks in it (a later epoch then costs neither
a fetch nor a decompression: a read of raw float32 from local disk), the files dataset
the objects as fetched.

Shared by every process on the machine that is given the same directory (ranks and
DataLoader workers): entries are written to a temp file and renamed into place, so a
reader sees a whole entry or none; a hit refreshes the entry's mtime, which orders the
eviction. Each process counts what it adds and rescans the directory whenever it has
added 1/20 of the limit, so the total passes the limit by at most that much per process
before the oldest entries go.

Keys must name immutable content (a chunk of a pinned cube snapshot, an object of a
given size): the cache never revalidates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"AICACHE1"
HEADER = struct.Struct("<8sQ")  # magic, payload length: a short file (OS crash) is a miss
TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Where the cache lives and how big it may grow (bytes)."""

    directory: str
    max_bytes: int


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evicted: int = 0


class DiskCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        directory.mkdir(parents=True, exist_ok=True)
        self._size = self._scan_size()
        self._added = 0

    def path_for(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.directory / digest[:2] / digest[2:]

    def get(self, key: str) -> bytes | None:
        path = self.path_for(key)
        try:
            with path.open("rb") as f:
                payload = _payload(f.read(HEADER.size), f.read())
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        if payload is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.stats.misses += 1
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # most recently used
        self.stats.hits += 1
        return payload

    def put(self, key: str, data: bytes | memoryview) -> None:
        size = memoryview(data).nbytes
        if size + HEADER.size > self.max_bytes:
            return  # would evict everything and still not fit
        path = self.path_for(key)
        path.parent.mkdir(exist_ok=True)
        temp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            with temp.open("wb") as f:
                f.write(HEADER.pack(MAGIC, size))
                f.write(data)
            os.replace(temp, path)
        except OSError:
            temp.unlink(missing_ok=True)  # a full disk makes a cache miss, not a failure
            return
        self._size += size + HEADER.size
        self._added += size + HEADER.size
        if self._size > self.max_bytes or self._added > self.max_bytes // 20:
            self._evict()

    def size(self) -> int:
        return self._scan_size()

    def _entries(self) -> list[tuple[float, int, Path]]:
        found: list[tuple[float, int, Path]] = []
        for sub in os.scandir(self.directory):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub.path):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat()
                    found.append((st.st_mtime, st.st_size, Path(entry.path)))
        return found

    def _scan_size(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> None:
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        target = self.max_bytes * 9 // 10  # some room, so the next put does not rescan
        stale = time.time() - 3600
        for mtime, size, path in entries:
            if total <= target:
                break
            if path.name.endswith(TEMP_SUFFIX) and mtime > stale:
                continue  # another process is writing it
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                self.stats.evicted += 1
            total -= size
        self._size = total
        self._added = 0


_opening = threading.Lock()
_caches: dict[tuple[int, CacheSettings], DiskCache] = {}


def process_cache(settings: CacheSettings) -> DiskCache:
    """This process's handle on the cache (its counters are this process's)."""
    key = (os.getpid(), settings)
    with _opening:  # prefetch threads ask at once: one handle, one set of counters
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = DiskCache(Path(settings.directory), settings.max_bytes)
    return cache


def _payload(header: bytes, data: bytes) -> bytes | None:
    if len(header) < HEADER.size:
        return None
    magic, length = HEADER.unpack(header)
    if magic != MAGIC or len(data) != length:
        return None
    return data
