"""The disk cache: LRU by use, a size limit across processes, broken entries are misses."""

from __future__ import annotations

import os
import time
from pathlib import Path

from astroingest_trainer._cache import HEADER, DiskCache


def test_round_trip_and_counters(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, 1 << 20)
    assert cache.get("a") is None
    cache.put("a", b"alpha")
    assert cache.get("a") == b"alpha"
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert DiskCache(tmp_path, 1 << 20).get("a") == b"alpha"  # another process's view


def test_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    entry = 1000
    cache = DiskCache(tmp_path, 10 * (entry + HEADER.size))
    for n in range(8):
        cache.put(f"k{n}", bytes(entry))
        os.utime(cache.path_for(f"k{n}"), (time.time() - 100 + n,) * 2)
    assert cache.get("k0") is not None  # k0 is now the most recently used
    for n in range(8, 12):
        cache.put(f"k{n}", bytes(entry))
    assert cache.size() <= cache.max_bytes
    kept = {n for n in range(12) if cache.path_for(f"k{n}").exists()}
    assert kept == {0, 4, 5, 6, 7, 8, 9, 10, 11}  # the three oldest unused went
    assert cache.stats.evicted == 3


def test_the_limit_holds_with_several_writers(tmp_path: Path) -> None:
    limit = 50_000
    writers = [DiskCache(tmp_path, limit) for _ in range(3)]
    for n in range(60):
        writers[n % 3].put(f"k{n}", os.urandom(1000))
    # each writer may pass the limit by 1/20 of it before it rescans
    assert writers[0].size() <= limit + 3 * limit // 20 + 3 * 1016


def test_a_short_or_foreign_file_is_a_miss(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, 1 << 20)
    cache.put("a", b"0123456789")
    path = cache.path_for("a")
    path.write_bytes(path.read_bytes()[:-3])  # cut short, as after a power loss
    assert cache.get("a") is None
    assert not path.exists()
    cache.put("b", b"x")
    cache.path_for("b").write_bytes(b"not a cache entry at all")
    assert cache.get("b") is None


def test_an_entry_bigger_than_the_cache_is_not_kept(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, 100)
    cache.put("big", bytes(500))
    assert cache.get("big") is None and cache.size() == 0
