"""What a plugin needs to add its own checks to ``astroingest doctor``.

A check is a name and an async function. It gets a :class:`DoctorContext` (the loaded
configuration, an HTTP client, and whether ``--online`` was given) and returns one
:class:`CheckResult` per thing it looked at, or none when there is nothing to check
(no source of its type). Checks that call an archive must do so only when
``ctx.online`` is true; offline they can still say what they would check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import httpx

if TYPE_CHECKING:
    from astroingest._config import Config, Source

CheckState = Literal["pass", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    state: CheckState
    detail: str  # what was found; never a secret's value
    fix: str = ""  # what to do about it
    subject: str = ""  # what was checked, when a check looks at several things (a source)

    @classmethod
    def passed(cls, detail: str, *, subject: str = "") -> CheckResult:
        return cls("pass", detail, "", subject)

    @classmethod
    def failed(cls, detail: str, fix: str, *, subject: str = "") -> CheckResult:
        return cls("fail", detail, fix, subject)

    @classmethod
    def skipped(cls, detail: str, *, subject: str = "") -> CheckResult:
        return cls("skip", detail, "", subject)


@dataclass(frozen=True, slots=True)
class DoctorContext:
    config: Config
    online: bool  # true with --online: checks may call the archives
    client: httpx.AsyncClient  # for online checks: the run's timeouts, no cookies
    unresolved: frozenset[str] = field(default_factory=frozenset)
    """Sources with ``${VAR}`` the environment does not define (reported on their own)."""

    def sources(self, source_type: str) -> list[Source]:
        """The enabled sources of one type whose variables are all defined."""
        return [
            s
            for s in self.config.sources.values()
            if s.type.name == source_type and s.config.enabled and s.name not in self.unresolved
        ]


CheckFunction = Callable[[DoctorContext], Awaitable[Sequence[CheckResult]]]


@dataclass(frozen=True, slots=True)
class DoctorCheck:
    """A check registered through ``astroingest_doctor_checks``."""

    name: str
    run: CheckFunction
    description: str = ""
