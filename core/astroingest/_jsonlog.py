"""JSON-lines logs for unattended runs: one object per line, for log shippers and monitors.

Each line has ``ts`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, plus
``source``, ``key``, ``status``, ``size``, ``run_id``, ``totals`` and ``report`` where
a record carries them. The handler's RedactingFilter has already scrubbed the message;
the extra fields are scrubbed here, with the same redactor.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from astroingest._redact import Redactor
from astroingest._report import AssetResult

log = logging.getLogger("astroingest")

FIELDS = ("source", "key", "status", "size", "error", "run_id", "totals", "report")


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = self.redactor(value) if isinstance(value, str) else value
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class JsonProgress:
    """The progress sink for JSON logs: one structured record per finished asset."""

    def planned(self, count: int = 1) -> None:
        pass

    def transferred(self, nbytes: int) -> None:
        pass

    def finished(self, result: AssetResult) -> None:
        bad = result.status in ("failed", "quarantined", "skipped")
        fields = {
            "source": result.source,
            "key": result.key,
            "status": result.status,
            "size": result.size,
            "error": result.error,
        }
        log.log(
            logging.WARNING if bad else logging.INFO,
            "%s %s/%s",
            result.status,
            result.source,
            result.key or "-",
            extra=fields,
        )

    def close(self) -> None:
        pass
