"""When to try again and how long to wait: tenacity, with Retry-After honoured."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass

import httpx
import tenacity

from astroingest._exceptions import RetryableError

log = logging.getLogger("astroingest")

# Transport failures worth another attempt: refused or reset connections, timeouts,
# and bodies cut short (h11 raises RemoteProtocolError when Content-Length is not met).
TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, RetryableError)
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` further attempts after the first, exponential backoff with full jitter.

    ``floor`` is the least any retry waits, also when Retry-After says 0 or is absent:
    an archive that is struggling gets a breather whatever it says. A Retry-After is
    honoured even above ``ceiling``, up to ``retry_after_cap``.
    """

    retries: int = 5
    floor: float = 0.5
    ceiling: float = 60.0
    retry_after_cap: float = 600.0  # the server's word beats our ceiling, within reason

    def wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(self.retry_after_cap, max(self.floor, retry_after))
        backoff = self.floor * 2 ** (state.attempt_number - 1)
        return min(self.ceiling, self.floor + random.uniform(0, backoff))

    def attempts(self, what: str) -> tenacity.AsyncRetrying:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.info(
                "retry %d/%d for %s in %.2fs: %s",
                state.attempt_number,
                self.retries,
                what,
                wait,
                describe(error),
            )

        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self.wait,
            retry=tenacity.retry_if_exception_type(TRANSIENT),
            before_sleep=before_sleep,
            reraise=True,
        )


def describe(error: BaseException | None) -> str:
    """A short, secret-free description of a failure (no URLs with query strings)."""
    if error is None:
        return "unknown error"
    if isinstance(error, httpx.TimeoutException):
        return f"timeout ({type(error).__name__})"
    if isinstance(error, httpx.HTTPError):
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(
            ": "
        )
    return str(error) or type(error).__name__
