"""Faults from the archive: every asset lands exactly once with the right sha256, nothing partial."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from astroingest._archive_server import ArchiveServer
from tests.conftest import run_cli
from tests.e2e.conftest import ledger_rows, partials, reports, sha256, stored

FAULTS = [
    "500",
    "503",
    "429",
    "429:0",
    "429:1",
    "503:1",
    "reset",
    "truncate",
    "stall:5",
    "delay:5",
    "corrupt",
]


def body(i: int) -> bytes:
    rows = "".join(f"{i},{j},{i * j}\n" for j in range(2000))
    return ("a,b,c\n" + rows).encode()


def test_every_fault_recovers_exactly_once(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        urls, expected = [], {}
        for i, fault in enumerate(FAULTS):
            name = f"f{i}-{fault.replace(':', '_')}.csv"
            data = body(i)
            expected[name] = data
            # "corrupt" is only caught through a published checksum: give it one
            urls.append(
                {"url": archive.add(name, data, content_type="text/csv"), "sha256": sha256(data)}
            )
            archive.fault(name, fault)
            if fault == "500":
                archive.fault(name, "500", "503")  # several in a row
        sources = tmp_path / "sources.toml"
        entries = ",\n  ".join(f'{{ url = "{u["url"]}", sha256 = "{u["sha256"]}" }}' for u in urls)
        sources.write_text(
            "[defaults]\nbackoff = 0.05\nmax_backoff = 0.3\nread_timeout = 1\nretries = 5\n"
            f'[sources.faulty]\nplugin = "http"\nurls = [\n  {entries}\n]\n'
        )
        result = run_cli(["run", "--sources", str(sources), "-v"])
        assert result.returncode == 0, result.stdout + result.stderr
        slept_429 = [r.time for r in archive.requests() if "429_1" in r.path]
    data = tmp_path / "astroingest-data"
    assert stored(data, "faulty") == expected
    assert partials(data) == []
    assert [(row[1], row[3]) for row in ledger_rows(data)] == sorted(
        (k, sha256(v)) for k, v in expected.items()
    )
    [report] = reports(data)
    attempts = {a["key"]: a["attempts"] for a in report["assets"]}
    assert all(attempts[k] == 2 for k in attempts if "f0-" not in k), attempts
    assert attempts[next(k for k in attempts if k.startswith("f0-"))] == 4
    assert slept_429[1] - slept_429[0] >= 0.95  # Retry-After: 1 was honoured
    assert "retry" in result.stderr


def test_retries_exhausted_fails_that_asset_only(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        ok = archive.add("ok.csv", body(1), content_type="text/csv")
        bad = archive.add("bad.csv", body(2), content_type="text/csv")
        archive.fault("bad.csv", "503", "503", "503")
        sources = tmp_path / "sources.toml"
        sources.write_text(
            f'[defaults]\nbackoff = 0.02\nretries = 2\n[sources.s]\nplugin = "http"\nurls = ["{ok}", "{bad}"]\n'
        )
        result = run_cli(["run", "--sources", str(sources)])
        assert archive.count("bad.csv") == 3
    assert result.returncode == 1
    data = tmp_path / "astroingest-data"
    assert set(stored(data, "s")) == {"ok.csv"}
    assert partials(data) == []


def _big_body(size: int) -> Iterator[bytes]:
    block = bytes(range(256)) * 256
    sent = 0
    while sent < size:
        chunk = block[: min(len(block), size - sent)]
        sent += len(chunk)
        yield chunk


def _start_run(sources: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "astroingest", "run", "--sources", str(sources)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_partial(data: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        temps = [p for p in data.rglob("*.astroingest-part") if p.stat().st_size > 0]
        if temps:
            return
        time.sleep(0.05)
    raise AssertionError("the run never started writing")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_mid_transfer_then_rerun_completes(tmp_path: Path, sig: signal.Signals) -> None:
    size = 48 * 1024 * 1024
    small = body(7)
    with ArchiveServer() as archive:
        big = archive.add("big.bin", generator=(size, _big_body))
        archive.fault(
            "big.bin", "stall_after:4194304:30"
        )  # the first transfer hangs mid-body: kill it there
        done = archive.add("small.csv", small, content_type="text/csv")
        sources = tmp_path / "sources.toml"
        sources.write_text(
            f'[defaults]\nread_timeout = 60\n[sources.s]\nplugin = "http"\nurls = ["{done}", "{big}"]\n'
        )
        data = tmp_path / "astroingest-data"
        proc = _start_run(sources)
        _wait_for_partial(data)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGKILL:
            assert proc.returncode == -9
        else:
            assert proc.returncode == 130, err
            assert "Traceback" not in err
            assert partials(data) == []  # a clean cancel cleans up itself
            assert reports(data)[-1]["status"] == "cancelled"
        assert "big.bin" not in stored(data, "s")

        rerun = run_cli(["run", "--sources", str(sources)])
        assert rerun.returncode == 0, rerun.stderr
    files = stored(data, "s")
    assert sha256(files["big.bin"]) == sha256(b"".join(_big_body(size)))
    assert files["small.csv"] == small
    assert partials(data) == []
    assert [row[1] for row in ledger_rows(data)] == ["big.bin", "small.csv"]
    runs = reports(data)
    assert (
        sum(a["status"] == "stored" and a["key"] == "big.bin" for r in runs for a in r["assets"])
        == 1
    )


def test_report_is_json_even_when_everything_fails(tmp_path: Path) -> None:
    sources = tmp_path / "sources.toml"
    sources.write_text(
        '[defaults]\nretries = 0\nconnect_timeout = 2\n[sources.s]\nplugin = "http"\nurls = ["http://127.0.0.1:9/nothing.csv"]\n'
    )
    result = run_cli(["run", "--sources", str(sources)])
    assert result.returncode == 1
    [report] = reports(tmp_path / "astroingest-data")
    assert report["status"] == "failed"
    assert report["assets"][0]["error"].startswith("ConnectError")
    assert json.dumps(report)
    assert stored(tmp_path / "astroingest-data", "s") == {}
