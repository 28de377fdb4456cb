"""The validator contract: fed chunk by chunk, judged once at the end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Check:
    """One named check. A failed critical check makes the whole score 0."""

    name: str
    passed: bool
    detail: str = ""
    critical: bool = False


@dataclass(frozen=True, slots=True)
class QualityReport:
    """What a validator concluded about one body."""

    validator: str
    score: float
    checks: tuple[Check, ...] = field(default_factory=tuple)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, object]:
        return {
            "validator": self.validator,
            "score": self.score,
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail, "critical": c.critical}
                for c in self.checks
            ],
        }


def score(checks: Sequence[Check]) -> float:
    """0 when a critical check failed, else the fraction of checks passed."""
    if not checks:
        return 1.0
    if any(c.critical and not c.passed for c in checks):
        return 0.0
    return sum(c.passed for c in checks) / len(checks)


def plural(count: int, noun: str) -> str:
    """``1 row``, ``2 rows``: for check details."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def report(validator: str, checks: Sequence[Check]) -> QualityReport:
    return QualityReport(validator=validator, score=score(checks), checks=tuple(checks))


class Validator(Protocol):
    """One instance per body. Must keep bounded state: never the whole body."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> QualityReport: ...


@dataclass(frozen=True, slots=True)
class ValidatorType:
    """A validator registered through ``astroingest_validators``.

    ``media_types`` are matched without parameters (``text/csv; charset=utf-8`` → ``text/csv``);
    ``extensions`` include the dot and are matched case-insensitively against the key
    (``.fits``, ``.nc``, ``.csv.gz`` — the longest match wins).
    """

    name: str
    factory: Callable[[], Validator]
    media_types: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
