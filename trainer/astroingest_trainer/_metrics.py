"""Training metrics as JSON lines in the logs store, uploaded as the run goes.

Objects cannot be appended to, so the lines of the current segment are kept and the
segment object is rewritten every ``upload_every`` seconds and at the end; past 4 MiB a
segment is closed and the next one started, so no upload grows without bound. Layout:
``<logs>/<run_id>/run.json`` (config, status) and ``<logs>/<run_id>/metrics-NNNN.jsonl``.
A restarted run gets a new ``run_id``; run ids sort by start time.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from astroingest_trainer import _storeio

SEGMENT_BYTES = 4 * 1024 * 1024


def new_run_id() -> str:
    """Sorts by start time (to the millisecond), unique by its random tail."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


class MetricsLog:
    def __init__(self, url: str, options: dict[str, Any], run_id: str, upload_every: float) -> None:
        self.store = _storeio.open_store(url, options)
        self.run_id = run_id
        self.upload_every = upload_every
        self._lines: list[str] = []
        self._bytes = 0
        self._segment = 0
        self._uploaded_at = time.monotonic()

    def record(self, fields: dict[str, Any]) -> None:
        line = json.dumps({"run_id": self.run_id, "time": time.time(), **fields})
        self._lines.append(line)
        self._bytes += len(line) + 1
        if time.monotonic() - self._uploaded_at >= self.upload_every:
            self.upload()

    def upload(self) -> None:
        if self._lines:
            body = ("\n".join(self._lines) + "\n").encode()
            _storeio.put_bytes(self.store, f"{self.run_id}/metrics-{self._segment:04d}.jsonl", body)
            if self._bytes >= SEGMENT_BYTES:
                self._segment += 1
                self._lines.clear()
                self._bytes = 0
        self._uploaded_at = time.monotonic()

    def write_run(self, info: dict[str, Any]) -> None:
        body = json.dumps({"run_id": self.run_id, **info}, indent=2, default=str).encode()
        _storeio.put_bytes(self.store, f"{self.run_id}/run.json", body)
