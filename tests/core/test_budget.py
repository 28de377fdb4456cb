"""Budget guards: max_bytes / max_assets per run and per source, on the real engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from astroingest._archive_server import ArchiveServer
from astroingest._budget import Budget, Limits, parse_size
from astroingest._exceptions import ConfigError
from astroingest._report import AssetResult, RunReport

BODY = b"x,y\n" + b"1,2\n" * 249  # 1000 bytes of CSV


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("10 GiB", 10 * 2**30),
        ("1.5 GB", 1_500_000_000),
        ("500mb", 500_000_000),
        ("2 KiB", 2048),
        ("7 B", 7),
    ],
)
def test_sizes_are_read_in_decimal_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "10 XB", "-1 GiB", "1e9", "10 G"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|unit"):
        parse_size(text)


def test_integers_pass_through_for_pydantic_to_judge() -> None:
    assert parse_size(12) == 12
    assert parse_size(True) is True  # strict pydantic refuses it, not this function


def test_bad_max_bytes_in_sources_toml_is_one_line(
    write_toml: Callable[[str], Path], astroingest_run: Callable[..., RunReport]
) -> None:
    with pytest.raises(ConfigError) as error:
        astroingest_run(
            """
            [sources.a]
            plugin = "http"
            urls = ["http://127.0.0.1:9/a.csv"]
            max_bytes = "lots"
            """
        )
    assert "[sources.a] max_bytes: not a size: 'lots'" in str(error.value)
    assert "\n" not in str(error.value)


def _sources(archive: ArchiveServer, count: int, *, sized: bool, extra: str = "") -> str:
    urls = [archive.add(f"f{i}.csv", BODY, content_type="text/csv") for i in range(count)]
    entries = [{"url": u, "size": len(BODY)} if sized else u for u in urls]
    listed = ", ".join(
        f'{{ url = "{e["url"]}", size = {e["size"]} }}' if isinstance(e, dict) else json.dumps(e)
        for e in entries
    )
    return f"""
        [defaults]
        backoff = 0.05
        {extra}
        [sources.mirror]
        plugin = "http"
        urls = [{listed}]
        """


def _statuses(report: RunReport) -> dict[str, str]:
    return {a.key or "": a.status for a in report.assets}


def test_known_sizes_past_max_bytes_are_skipped_and_reported(
    local_archive: ArchiveServer, astroingest_run: Callable[..., RunReport]
) -> None:
    report = astroingest_run(_sources(local_archive, 3, sized=True, extra='max_bytes = "2500 B"'))
    assert sorted(_statuses(report).values()) == ["skipped", "stored", "stored"]
    assert report.totals.skipped == 1 and report.totals.bytes == 2000
    assert not report.clean
    [skipped] = [a for a in report.assets if a.status == "skipped"]
    assert skipped.size == 1000
    assert skipped.error == "1000 B would pass max_bytes 2.4 KiB for the run (2.0 KiB landed)"
    assert len([r for r in local_archive.requests() if r.path.endswith(".csv")]) == 2


def test_unchanged_assets_cost_nothing_so_a_rerun_gets_further(
    local_archive: ArchiveServer, astroingest_run: Callable[..., RunReport]
) -> None:
    text = _sources(local_archive, 3, sized=True, extra='max_bytes = "2500 B"')
    first = astroingest_run(text)
    second = astroingest_run(text)
    assert first.totals.stored == 2 and first.totals.skipped == 1
    assert second.totals.unchanged == 2 and second.totals.stored == 1
    assert second.totals.skipped == 0 and second.clean


def test_unknown_sizes_count_as_they_land(
    local_archive: ArchiveServer, astroingest_run: Callable[..., RunReport]
) -> None:
    # One at a time: the third is judged after two landed (2000 B >= 1500 B).
    extra = "concurrency = 1\nmax_bytes = 1500"
    report = astroingest_run(_sources(local_archive, 3, sized=False, extra=extra))
    assert [a.status for a in report.assets] == ["stored", "stored", "skipped"]
    assert report.assets[2].error == "max_bytes 1.5 KiB reached for the run (2.0 KiB landed)"
    assert report.assets[2].size is None


def test_max_assets_per_source(
    local_archive: ArchiveServer, astroingest_run: Callable[..., RunReport]
) -> None:
    text = _sources(local_archive, 3, sized=True) + "max_assets = 1\n"
    report = astroingest_run(text)
    assert sorted(_statuses(report).values()) == ["skipped", "skipped", "stored"]
    assert {a.error for a in report.assets if a.status == "skipped"} == {
        "max_assets 1 reached for source mirror"
    }


def test_a_source_budget_leaves_other_sources_alone(
    local_archive: ArchiveServer, astroingest_run: Callable[..., RunReport]
) -> None:
    other = local_archive.add("other.csv", BODY, content_type="text/csv")
    text = (
        _sources(local_archive, 2, sized=True)
        + f"""
        max_bytes = 1000
        [sources.other]
        plugin = "http"
        urls = ["{other}"]
        """
    )
    report = astroingest_run(text)
    by_source = {(a.source, a.status) for a in report.assets}
    assert ("mirror", "skipped") in by_source and ("other", "stored") in by_source
    assert report.totals.stored == 2 and report.totals.skipped == 1


def test_no_guards_no_skips(
    local_archive: ArchiveServer, astroingest_run: Callable[..., RunReport]
) -> None:
    report = astroingest_run(_sources(local_archive, 3, sized=False))
    assert report.totals.stored == 3 and report.totals.skipped == 0 and report.clean


def _result(status: str, size: int | None) -> AssetResult:
    return AssetResult("s", "k", None, status, size=size)  # type: ignore[arg-type]


async def test_a_waiting_asset_starts_when_one_in_flight_proves_unchanged() -> None:
    budget = Budget(Limits(max_bytes=1500), {})
    first = await budget.admit("s", 1000)
    assert not isinstance(first, str)
    second = asyncio.create_task(budget.admit("s", 1000))
    await asyncio.sleep(0.01)
    assert not second.done()  # 2000 would pass, unless the first comes to nothing
    await budget.settle(first, _result("unchanged", 1000))
    assert not isinstance(await asyncio.wait_for(second, 1), str)


async def test_a_waiting_asset_is_skipped_when_the_one_in_flight_lands() -> None:
    budget = Budget(Limits(max_bytes=1500), {})
    first = await budget.admit("s", 1000)
    assert not isinstance(first, str)
    second = asyncio.create_task(budget.admit("s", 1000))
    await asyncio.sleep(0.01)
    await budget.settle(first, _result("quarantined", 1000))  # quarantine is stored too
    assert await asyncio.wait_for(second, 1) == (
        "1000 B would pass max_bytes 1.5 KiB for the run (1000 B landed)"
    )


async def test_streamed_bytes_of_unknown_size_stop_new_starts() -> None:
    budget = Budget(Limits(max_bytes=100), {})
    first = await budget.admit("s", None)
    assert not isinstance(first, str)
    with budget.tracking(first):
        budget.streamed(60)
    assert not isinstance(await budget.admit("s", None), str)  # 60 < 100: still room
    with budget.tracking(first):
        budget.streamed(60)
    waiting = asyncio.create_task(budget.admit("s", None))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # 120 in flight: nothing new starts while it might land
    await budget.settle(first, _result("stored", 120))
    assert (
        await asyncio.wait_for(waiting, 1) == "max_bytes 100 B reached for the run (120 B landed)"
    )


async def test_streaming_outside_an_admitted_asset_counts_nothing() -> None:
    budget = Budget(Limits(max_bytes=10), {})
    budget.streamed(1000)
    assert not isinstance(await budget.admit("s", 10), str)
