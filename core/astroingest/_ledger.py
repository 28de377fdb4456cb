"""What landed where: one SQLite record per asset, shared safely by concurrent runs.

SQLite in WAL mode with a busy timeout lets two processes (a cron run and a manual
one) read and write the same ledger; every write is one short transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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

# Multipart uploads in progress, so that a rerun can continue one instead of starting over.
_UPLOADS_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    part_size INTEGER NOT NULL,
    parts TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (store, key)
)
"""

# When each source last ran with nothing failed or skipped: what `run --due` goes by.
_SOURCE_RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS source_runs (
    source TEXT PRIMARY KEY,
    succeeded_at TEXT NOT NULL,
    run_id TEXT NOT NULL
)
"""

# Raw objects copied by `astroingest backup`: one row per asset and backup store.
_BACKUPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS backups (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    target TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    backup_key TEXT NOT NULL,
    version_id TEXT,
    copied_at TEXT NOT NULL,
    PRIMARY KEY (source, key, target)
)
"""


@dataclass(frozen=True, slots=True)
class BackupRecord:
    source: str
    key: str
    target: str  # the backup store's URL
    sha256: str
    size: int
    backup_key: str  # the copy's key in that store (S3: the object key, prefix included)
    version_id: str | None
    copied_at: str


@dataclass(frozen=True, slots=True)
class UploadPart:
    number: int
    size: int
    sha256: str  # base64, as S3 takes it
    etag: str


@dataclass(frozen=True, slots=True)
class UploadRecord:
    store: str
    key: str
    upload_id: str
    part_size: int
    parts: tuple[UploadPart, ...]
    started_at: float


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
        self._db.execute(_UPLOADS_SCHEMA)
        self._db.execute(_SOURCE_RUNS_SCHEMA)
        self._db.execute(_BACKUPS_SCHEMA)
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

    def source_succeeded(self, source: str, when: str, run_id: str) -> None:
        """``source`` ran successfully in the run that started at ``when`` (ISO 8601)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO source_runs VALUES (?, ?, ?)", (source, when, run_id)
            )

    def last_successes(self) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT source, succeeded_at FROM source_runs").fetchall()
        return dict(rows)

    def upload_get(self, store: str, key: str) -> UploadRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT upload_id, part_size, parts, started_at FROM uploads"
                " WHERE store = ? AND key = ?",
                (store, key),
            ).fetchone()
        if row is None:
            return None
        parts = tuple(UploadPart(*p) for p in json.loads(row[2]))
        return UploadRecord(store, key, row[0], row[1], parts, row[3])

    def upload_put(self, record: UploadRecord) -> None:
        parts = json.dumps([astuple(p) for p in record.parts])
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.store,
                    record.key,
                    record.upload_id,
                    record.part_size,
                    parts,
                    record.started_at,
                ),
            )

    def upload_drop(self, store: str, key: str, upload_id: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM uploads WHERE store = ? AND key = ? AND upload_id = ?",
                (store, key, upload_id),
            )

    def uploads_started_before(self, store: str, when: float) -> list[UploadRecord]:
        with self._lock:
            keys = self._db.execute(
                "SELECT key FROM uploads WHERE store = ? AND started_at < ?", (store, when)
            ).fetchall()
        found = (self.upload_get(store, key) for (key,) in keys)
        return [record for record in found if record is not None]

    def merge_from(self, other: Path) -> int:
        """Take in another copy's asset, backup and last-success records where newer than ours.

        Returns how many records came in. Columns the other copy lacks stay empty.
        """
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
            try:
                before = self._db.total_changes
                self._merge_table("assets", ("source", "key"), "stored_at")
                self._merge_table("backups", ("source", "key", "target"), "copied_at")
                self._merge_table("source_runs", ("source",), "succeeded_at")
                return self._db.total_changes - before
            finally:
                self._db.execute("DETACH DATABASE other")

    def _merge_table(self, table: str, keys: tuple[str, ...], newer: str) -> None:
        ours = [row[1] for row in self._db.execute(f"PRAGMA main.table_info({table})")]
        have = {row[1] for row in self._db.execute(f"PRAGMA other.table_info({table})")}
        columns = [c for c in ours if c in have]
        if not columns:
            return
        match = " AND ".join(f"m.{k} = o.{k}" for k in keys)
        self._db.execute(
            f"INSERT OR REPLACE INTO {table} ({', '.join(columns)})"
            f" SELECT {', '.join('o.' + c for c in columns)}"
            f" FROM other.{table} AS o LEFT JOIN {table} AS m ON {match}"
            f" WHERE m.{keys[0]} IS NULL OR o.{newer} > m.{newer}"
        )

    def snapshot(self, target: Path) -> None:
        """A consistent copy of the whole ledger in one file (no WAL beside it)."""
        target.unlink(missing_ok=True)
        copy = sqlite3.connect(target)
        try:
            with self._lock:
                self._db.backup(copy)
        finally:
            copy.close()

    def backup_put(self, record: BackupRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO backups VALUES (?, ?, ?, ?, ?, ?, ?, ?)", astuple(record)
            )

    def backups(self, target: str) -> list[BackupRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM backups WHERE target = ? ORDER BY source, key", (target,)
            ).fetchall()
        return [BackupRecord(*row) for row in rows]

    def not_backed_up(self, target: str) -> list[LedgerRecord]:
        """Assets with no copy in ``target``, or whose copy is of an older version."""
        picked = ", ".join(f"a.{c.strip()}" for c in _COLUMNS.split(","))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {picked} FROM assets AS a LEFT JOIN backups AS b"
                " ON b.source = a.source AND b.key = a.key AND b.target = ?"
                " WHERE b.sha256 IS NULL OR b.sha256 != a.sha256 ORDER BY a.source, a.key",
                (target,),
            ).fetchall()
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
