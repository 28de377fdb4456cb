"""End-to-end helpers: the real CLI in a subprocess against a real archive on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from astroingest.stores.local import JOURNAL, TEMP_SUFFIX


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reports(data: Path) -> list[dict[str, Any]]:
    runs = sorted((data / "logs" / "runs").glob("*.json"))
    return [json.loads(p.read_text()) for p in runs]


def partials(data: Path) -> list[Path]:
    """Anything half-written: temp files, or journal entries of writers that never finished."""
    temps = [p for p in data.rglob("*") if p.name.endswith(TEMP_SUFFIX)]
    journals = list(data.rglob(f"{JOURNAL}/*.json"))  # lock files are not partial data
    return temps + journals


def stored(data: Path, source: str) -> dict[str, bytes]:
    root = data / "raw" / source
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and JOURNAL not in p.parts
    }


def ledger_rows(data: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data / "logs" / "ledger.sqlite") as db:
        return db.execute(
            "SELECT source, key, size, sha256 FROM assets ORDER BY source, key"
        ).fetchall()
