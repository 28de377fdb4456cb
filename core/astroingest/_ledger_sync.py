"""The ledger when the logs live in an object store: a local working copy, shared through it.

SQLite needs a local file. When the logs store is S3, the run works on a copy in the
user's state directory: at the start the store's ``ledger.sqlite`` is merged into it
(the newer record of each asset wins), at the end a consistent snapshot goes back.
Two machines running at once may each miss the other's newest records; the cost is a
refetch that finds the asset unchanged, never a lost or doubled object.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import aiofiles

from astroingest._ledger import Ledger, ledger_path
from astroingest.stores._base import Store

LEDGER_OBJECT = "ledger.sqlite"
log = logging.getLogger("astroingest")


async def open_ledger(logs: Store) -> Ledger:
    root = logs.local_root()
    ledger = Ledger(ledger_path(root, logs.url))
    if root is None:
        try:
            await _pull(logs, ledger)
        except BaseException:
            ledger.close()
            raise
    return ledger


async def _pull(logs: Store, ledger: Ledger) -> None:
    if await logs.stat(LEDGER_OBJECT) is None:
        return
    incoming = ledger.path.with_name(ledger.path.name + ".incoming")
    try:
        async with aiofiles.open(incoming, "wb") as f:
            async for chunk in logs.read(LEDGER_OBJECT):
                await f.write(chunk)
        merged = await asyncio.to_thread(ledger.merge_from, incoming)
    finally:
        incoming.unlink(missing_ok=True)
    log.debug("ledger: %d records merged from %s", merged, logs.url)


async def push_ledger(logs: Store, ledger: Ledger) -> None:
    """Send a snapshot of the working copy back to the logs store (no-op on local disk)."""
    if logs.local_root() is not None:
        return
    outgoing = ledger.path.with_name(ledger.path.name + ".outgoing")
    try:
        await asyncio.to_thread(ledger.snapshot, outgoing)
        await _upload(logs, outgoing)
    finally:
        outgoing.unlink(missing_ok=True)


async def _upload(logs: Store, path: Path) -> None:
    digest = hashlib.sha256()
    async with await logs.open_writer(LEDGER_OBJECT) as writer:
        async with aiofiles.open(path, "rb") as f:
            while chunk := await f.read(1 << 20):
                digest.update(chunk)
                await writer.write(chunk)
        await writer.commit(digest.hexdigest())
