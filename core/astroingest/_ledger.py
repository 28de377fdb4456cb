"""What landed where: one SQLite record per asset, shared safely by concurrent runs.

SQLite in WAL mode with a busy timeout lets two processes (a cron run and a manual
one) read and write the same ledger; every write is one short transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from dataclasses import astuple, dataclass, fields
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    url TEXT NOT NULL,
    etag TEXT,
    last_modified TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    run_id TEXT NOT NULL,
    provenance TEXT,
    PRIMARY KEY (source, key)
)
"""


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    source: str
    key: str
    url: str  # credentials removed
    etag: str | None
    last_modified: str | None
    size: int
    sha256: str
    stored_at: str
    run_id: str
    provenance: str | None = None  # JSON: provider, query, ids, DOI…; no secrets


_COLUMNS = ", ".join(f.name for f in fields(LedgerRecord))


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; a power cut may lose the last
        # records, which only means those assets are fetched again and found unchanged.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add columns that later versions introduced to a ledger made by an earlier one."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(assets)")}
        for column in ("provenance",):
            if column not in have:
                self._db.execute(f"ALTER TABLE assets ADD COLUMN {column} TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get_sync(self, source: str, key: str) -> LedgerRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM assets WHERE source = ? AND key = ?", (source, key)
            ).fetchone()
        return LedgerRecord(*row) if row else None

    def put_sync(self, record: LedgerRecord) -> None:
        placeholders = ", ".join("?" for _ in fields(LedgerRecord))
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO assets ({_COLUMNS}) VALUES ({placeholders})",
                astuple(record),
            )

    def records(self, source: str | None = None) -> list[LedgerRecord]:
        query = f"SELECT {_COLUMNS} FROM assets"
        args: tuple[str, ...] = ()
        if source is not None:
            query += " WHERE source = ?"
            args = (source,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY source, key", args).fetchall()
        return [LedgerRecord(*row) for row in rows]

    async def get(self, source: str, key: str) -> LedgerRecord | None:
        return await asyncio.to_thread(self.get_sync, source, key)

    async def put(self, record: LedgerRecord) -> None:
        await asyncio.to_thread(self.put_sync, record)


def ledger_path(logs_root: Path | None, logs_url: str) -> Path:
    """Beside the logs when they are on local disk, else in the user's state directory."""
    if logs_root is not None:
        return logs_root / "ledger.sqlite"
    digest = hashlib.sha256(logs_url.encode()).hexdigest()[:16]
    return Path.home() / ".local" / "state" / "astroingest" / f"ledger-{digest}.sqlite"
