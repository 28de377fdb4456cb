"""Politeness budgets and the retry policy."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable

import pytest
import tenacity

from astroingest import RetryableError
from astroingest._archive_server import ArchiveServer
from astroingest._hosts import HostBudgets, HostLimit, HostOverride, RateLimiter, merge_limits
from astroingest._report import RunReport
from astroingest._retry import RetryPolicy, parse_retry_after


async def test_rate_limiter_spaces_requests() -> None:
    limiter = RateLimiter(20.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(limiter.acquire() for _ in range(6)))
    # six acquisitions at 20/s: the last waits five intervals
    assert loop.time() - start >= 5 * 0.05 - 0.01


async def test_connection_cap_is_shared_by_every_caller_of_a_host() -> None:
    budgets = HostBudgets(HostLimit("*", 8), [HostLimit("slow.example.org", connections=2)])
    inflight = peak = 0

    async def call(url: str) -> None:
        nonlocal inflight, peak
        async with budgets.for_url(url).slot():
            inflight += 1
            peak = max(peak, inflight)
            await asyncio.sleep(0.01)
            inflight -= 1

    await asyncio.gather(*(call(f"https://SLOW.example.org/{i}") for i in range(10)))
    assert peak == 2
    assert budgets.for_url("https://other.org/").limit.connections == 8


def test_merge_limits_strictest_plugin_then_user_field_by_field() -> None:
    merged = merge_limits(
        [HostLimit("a.org", 4, 10), HostLimit("A.org", 6, 3), HostLimit("ncbi.org", 3, 3.0)],
        {
            "b.org": HostOverride("b.org", connections=1),
            "a.org": HostOverride("a.org", connections=32),
            "ncbi.org": HostOverride("ncbi.org", connections=2),  # the rate stays the plugin's
        },
        HostLimit("*", 8, None),
    )
    assert {m.host.lower(): (m.connections, m.rate) for m in merged} == {
        "a.org": (32, 3),
        "b.org": (1, None),
        "ncbi.org": (2, 3.0),
    }


@pytest.mark.parametrize(
    ("header", "seconds"), [("0", 0.0), ("7", 7.0), (None, None), ("soon", None)]
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    now = time.time()
    header = email.utils.formatdate(now + 30, usegmt=True)
    value = parse_retry_after(header, now=now)
    assert value is not None and 28 <= value <= 31


def _state(error: BaseException, attempt: int = 1) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return state


def test_retry_after_zero_still_waits_the_floor() -> None:
    policy = RetryPolicy(retries=3, floor=0.2, ceiling=5, retry_after_cap=100)
    assert policy.wait(_state(RetryableError("429", retry_after=0))) == 0.2
    assert policy.wait(_state(RetryableError("429", retry_after=3))) == 3
    assert policy.wait(_state(RetryableError("429", retry_after=30))) == 30  # above the ceiling
    assert policy.wait(_state(RetryableError("503", retry_after=999))) == 100


def test_backoff_grows_with_jitter_within_bounds() -> None:
    policy = RetryPolicy(retries=8, floor=0.1, ceiling=100)
    waits = [policy.wait(_state(RetryableError("x"), attempt)) for attempt in range(1, 8)]
    for attempt, wait in enumerate(waits, start=1):
        assert 0.1 <= wait <= 0.1 + 0.1 * 2 ** (attempt - 1)


async def test_attempts_retry_transient_errors_then_give_up() -> None:
    policy = RetryPolicy(retries=2, floor=0.01, ceiling=0.02)
    calls = 0
    with pytest.raises(RetryableError):
        async for attempt in policy.attempts("x"):
            with attempt:
                calls += 1
                raise RetryableError("503")
    assert calls == 3


async def test_permanent_errors_are_not_retried() -> None:
    policy = RetryPolicy(retries=5, floor=0.01)
    calls = 0
    with pytest.raises(ValueError, match="bad"):
        async for attempt in policy.attempts("x"):
            with attempt:
                calls += 1
                raise ValueError("bad")
    assert calls == 1


def test_a_retry_after_pauses_the_whole_host(
    local_archive: ArchiveServer, astroingest_run: Callable[..., RunReport]
) -> None:
    a = local_archive.add("a.csv", b"x,y\n1,2\n", content_type="text/csv")
    b = local_archive.add("b.csv", b"x,y\n3,4\n", content_type="text/csv")
    local_archive.fault("a.csv", "429:1")
    report = astroingest_run(
        '[defaults]\nbackoff = 0.01\n[hosts."127.0.0.1"]\nconnections = 1\n'
        f'[sources.s]\nplugin = "http"\nurls = ["{a}", "{b}"]\n'
    )
    assert report.status == "ok"
    refused = local_archive.requests("a.csv")[0].time
    assert local_archive.requests("b.csv")[0].time - refused >= 0.9  # b waited out a's Retry-After
