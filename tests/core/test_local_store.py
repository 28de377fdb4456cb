"""The embedded local store: nothing appears until commit; nothing partial survives."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from astroingest import StoreError
from astroingest.stores.local import JOURNAL, TEMP_SUFFIX, LocalStore, LocalWriter


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


async def kill_a_writer_midway(root: Path) -> None:
    """A real process opens a writer on ``root``, writes, and is SIGKILLed before committing."""
    script = (
        "import asyncio, os, signal\n"
        "from pathlib import Path\n"
        "from astroingest.stores.local import LocalStore, LocalWriter\n"
        "async def main():\n"
        f"    w = await LocalStore(Path({str(root)!r})).open_writer('dead/a.bin')\n"
        "    await w.write(b'x' * (LocalWriter.BUFFER + 1))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], check=False)


async def test_commit_makes_the_object_appear_whole(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "raw")
    async with await store.open_writer("src/a.bin") as writer:
        await writer.write(b"hello ")
        assert await store.stat("src/a.bin") is None
        await writer.write(b"world")
        await writer.commit()
    assert (tmp_path / "raw/src/a.bin").read_bytes() == b"hello world"
    assert leftovers(tmp_path) == []
    assert list((tmp_path / "raw" / JOURNAL).glob("*.json")) == []


async def test_leaving_without_commit_aborts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(RuntimeError):
        async with await store.open_writer("a.bin") as writer:
            await writer.write(b"partial")
            raise RuntimeError("body truncated")
    assert not (tmp_path / "a.bin").exists()
    assert leftovers(tmp_path) == []


async def test_commit_replaces_atomically(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put_bytes("k", b"old")
    async with await store.open_writer("k") as writer:
        await writer.write(b"new")
        assert (tmp_path / "k").read_bytes() == b"old"
        await writer.commit()
    assert (tmp_path / "k").read_bytes() == b"new"


async def test_divert_moves_to_another_store(tmp_path: Path) -> None:
    raw, quarantine = LocalStore(tmp_path / "raw"), LocalStore(tmp_path / "quarantine")
    async with await raw.open_writer("s/x.fits") as writer:
        await writer.write(b"<html>")
        await writer.divert(quarantine, "s/x.fits")
    assert (tmp_path / "quarantine/s/x.fits").read_bytes() == b"<html>"
    assert not (tmp_path / "raw/s/x.fits").exists()
    assert leftovers(tmp_path) == []


async def test_large_objects_are_written_as_they_stream(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    async with await store.open_writer("big") as writer:
        for _ in range(5):
            await writer.write(b"b" * (LocalWriter.BUFFER // 2))
        [temp] = leftovers(tmp_path)
        assert temp.stat().st_size >= 2 * LocalWriter.BUFFER  # flushed, not held in memory
        await writer.commit()
    assert (tmp_path / "big").stat().st_size == 5 * (LocalWriter.BUFFER // 2)


async def test_read_back(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put_bytes("a", b"x" * 3_000_000)
    chunks = [c async for c in store.read("a")]
    assert b"".join(chunks) == b"x" * 3_000_000
    info = await store.stat("a")
    assert info is not None and info.size == 3_000_000


async def test_recover_removes_temp_files_of_dead_writers_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await kill_a_writer_midway(tmp_path)
    assert len(leftovers(tmp_path)) == 1
    alive = await store.open_writer("alive/b.bin")  # ours, still open
    await alive.write(b"y" * (LocalWriter.BUFFER + 1))
    assert await store.recover() == 1
    assert [p.parent.name for p in leftovers(tmp_path)] == ["alive"]
    await alive.abort()
    assert leftovers(tmp_path) == []
    entries = list((tmp_path / JOURNAL).glob("*.json"))
    assert entries == [], [json.loads(e.read_text()) for e in entries]


async def test_no_temp_file_is_ever_untracked(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    writer = await store.open_writer("a")
    assert not (tmp_path / JOURNAL).exists()  # nothing touches the disk before the first flush
    await writer.write(b"z" * (LocalWriter.BUFFER + 1))
    [entry] = list((tmp_path / JOURNAL).glob("*.json"))
    record = json.loads(entry.read_text())
    assert (tmp_path / record["temp"]).exists()
    assert record["pid"] == os.getpid()
    await writer.abort()


async def test_a_failed_commit_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put_bytes("x/y.csv", b"a,b\n")
    with pytest.raises(IsADirectoryError):
        async with await store.open_writer("x") as writer:  # "x" is a directory now
            await writer.write(b"a,b\n")
            await writer.commit()
    assert leftovers(tmp_path) == []
    assert list((tmp_path / JOURNAL).glob("*.json")) == []


async def test_cancelling_a_write_then_aborting_waits_for_the_disk(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    writer = await store.open_writer("big.bin")
    task = asyncio.create_task(writer.write(b"w" * (4 * LocalWriter.BUFFER)))
    await asyncio.sleep(0)  # the flush is now running in a worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await writer.abort()
    other = await store.open_writer("other.bin")
    async with other:
        await other.write(b"o" * (LocalWriter.BUFFER + 1))
        await other.commit()
    assert (tmp_path / "other.bin").read_bytes() == b"o" * (LocalWriter.BUFFER + 1)
    assert leftovers(tmp_path) == []
    with pytest.raises(StoreError):
        await writer.commit()  # an aborted writer cannot be committed later


async def test_a_dead_writer_is_recognised_even_when_its_pid_is_reused(tmp_path: Path) -> None:
    """A restarted container often gives the new run the dead run's PID: the lock decides."""
    store = LocalStore(tmp_path)
    await kill_a_writer_midway(tmp_path)
    [entry] = list((tmp_path / JOURNAL).glob("*.json"))
    record = json.loads(entry.read_text())
    record["pid"] = os.getpid()  # as if the dead writer had had our PID
    entry.write_text(json.dumps(record))
    assert await store.recover() == 1
    assert leftovers(tmp_path) == []
    assert list((tmp_path / JOURNAL).glob("*.lock")) == []


async def test_list_skips_unfinished_writers_and_journal(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put_bytes("ckpt/step-2.pt", b"22")
    await store.put_bytes("ckpt/step-1.pt", b"1")
    await store.put_bytes("other.npy", b"o")
    pending = await store.open_writer("ckpt/step-3.pt")
    await pending.write(b"x" * (LocalWriter.BUFFER + 1))  # a temp file and a journal entry exist
    listed = [(i.key, i.size) async for i in store.list("ckpt/")]
    await pending.abort()
    assert listed == [("ckpt/step-1.pt", 1), ("ckpt/step-2.pt", 2)]
