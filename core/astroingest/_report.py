"""The run report: one JSON document per run under ``<logs>/runs/<run_id>.json``."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

# skipped: not started because a budget guard (max_bytes, max_assets) was reached
AssetStatus = Literal["stored", "unchanged", "failed", "quarantined", "planned", "skipped"]
RunStatus = Literal["ok", "failed", "cancelled", "dry-run"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """Time-ordered to the millisecond, so reports sort by name even for runs a second apart."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


@dataclass(slots=True)
class AssetResult:
    source: str
    key: str | None
    url: str | None
    status: AssetStatus
    size: int | None = None
    sha256: str | None = None
    quality: float | None = None
    attempts: int = 0
    error: str | None = None
    validator: str | None = None
    provenance: dict[str, Any] | None = None


@dataclass(slots=True)
class Totals:
    stored: int = 0
    unchanged: int = 0
    failed: int = 0
    quarantined: int = 0
    skipped: int = 0
    bytes: int = 0


@dataclass(slots=True)
class RunReport:
    run_id: str
    started_at: str
    config: str
    finished_at: str | None = None
    status: RunStatus = "ok"
    totals: Totals = field(default_factory=Totals)
    assets: list[AssetResult] = field(default_factory=list)
    version: str = ""

    def add(self, result: AssetResult) -> None:
        self.assets.append(result)
        if result.status in ("stored", "unchanged", "failed", "quarantined", "skipped"):
            setattr(self.totals, result.status, getattr(self.totals, result.status) + 1)
        if result.status == "stored" and result.size:
            self.totals.bytes += result.size

    def finish(self, status: RunStatus) -> None:
        self.finished_at = now_iso()
        self.status = status

    @property
    def clean(self) -> bool:
        totals = self.totals
        return totals.failed == 0 and totals.quarantined == 0 and totals.skipped == 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"
