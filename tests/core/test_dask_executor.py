"""The Dask executor on a real LocalCluster (2 worker processes) against a local HTTP archive.

What it must keep: the same report and ledger as the local executor, per-host politeness
across all workers, and nothing lost or stored twice when a worker dies mid-transfer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply  # noqa: E402
from astroingest._config import load_config  # noqa: E402
from astroingest._engine import Engine, RunOptions  # noqa: E402
from astroingest._executors.client import DaskExecutor  # noqa: E402
from astroingest._ledger import Ledger  # noqa: E402
from astroingest._plugins import Host, load_host  # noqa: E402
from astroingest._progress import LogProgress  # noqa: E402
from astroingest._redact import Redactor  # noqa: E402
from astroingest._report import RunReport  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

DEFAULTS = """
[defaults]
retries = 2
backoff = 0.01
max_backoff = 0.05
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
    ) as local:
        yield local


@pytest.fixture(scope="module")
def host() -> Host:
    return load_host(entry_points=False)


def _run(
    directory: Path, toml: str, host: Host, scheduler: str | None = None, *, local: bool = False
) -> RunReport:
    """One run of the real engine on ``toml`` with its store under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sources.toml"
    path.write_text(textwrap.dedent(toml))
    config = load_config(path, host)
    executor = None if local else DaskExecutor(scheduler, entry_points=False)
    engine = Engine(config, host, LogProgress(), Redactor(config.secrets), executor)
    return asyncio.run(engine.run(RunOptions()))


def _comparable(report: RunReport) -> dict[str, Any]:
    """The report without what differs between any two runs (ids, clocks, paths)."""
    document = asdict(report)
    for field in ("run_id", "started_at", "finished_at", "config", "version"):
        document.pop(field)
    document["assets"].sort(key=lambda a: (a["source"], a["key"] or ""))
    return document


def _ledger(directory: Path) -> list[tuple[Any, ...]]:
    ledger = Ledger(directory / "astroingest-data" / "logs" / "ledger.sqlite")
    try:
        return [(r.source, r.key, r.url, r.etag, r.size, r.sha256) for r in ledger.records()]
    finally:
        ledger.close()


def _files(root: Path) -> dict[str, bytes]:
    """The objects under ``root`` (not the writers' journal, whose lock files name processes)."""
    found = (p for p in sorted(root.rglob("*")) if p.is_file())
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in found
        if ".astroingest-pending" not in p.parts
    }


def _mixed_archive(archive: ArchiveServer) -> str:
    """Stored, retried, failed, quarantined and checksum-failed assets; their urls table."""
    entries = []
    for i in range(6):
        url = archive.add(f"d/t{i}.csv", f"x,y\n{i},{i * i}\n".encode(), content_type="text/csv")
        entries.append(f'"{url}"')
    body = b"a,b\n1,2\n"
    entries.append(f'"{archive.add("d/flaky.csv", body, content_type="text/csv")}"')
    entries.append(f'"{archive.add("d/login.csv", body, content_type="text/csv")}"')
    entries.append(f'"{archive.url("d/missing.csv")}"')
    wrong = hashlib.sha256(b"something else").hexdigest()
    bad = archive.add("d/bad.csv", body, content_type="text/csv")
    entries.append(f'{{ url = "{bad}", sha256 = "{wrong}" }}')
    return ",\n    ".join(entries)


def _arm(archive: ArchiveServer) -> None:
    archive.fault("d/flaky.csv", "503")
    archive.fault("d/login.csv", "html")


def test_report_and_ledger_equal_the_local_executors(
    cluster: Any, host: Host, tmp_path: Path
) -> None:
    with ArchiveServer() as archive:
        toml = f'{DEFAULTS}\n[sources.mixed]\nplugin = "http"\nurls = [\n    {_mixed_archive(archive)}\n]\n'
        runs: dict[str, list[RunReport]] = {"local": [], "dask": []}
        for name in runs:
            for _ in range(2):  # the second run finds everything stored unchanged
                _arm(archive)
                scheduler = cluster.scheduler_address
                runs[name].append(
                    _run(tmp_path / name, toml, host, scheduler, local=name == "local")
                )

    local, dask = runs["local"], runs["dask"]
    first = local[0].totals
    assert (first.stored, first.failed, first.quarantined) == (7, 2, 1)
    assert local[1].totals.unchanged == 7
    for ours, theirs in zip(dask, local, strict=True):
        assert _comparable(ours) == _comparable(theirs)
    assert _ledger(tmp_path / "dask") == _ledger(tmp_path / "local")
    data = Path("astroingest-data")
    assert _files(tmp_path / "dask" / data / "raw") == _files(tmp_path / "local" / data / "raw")
    quarantined = tmp_path / "dask" / data / "logs" / "quarantine" / "mixed"
    assert sorted(p.name for p in quarantined.iterdir()) == ["login.csv", "login.csv.quality.json"]
    # The transfers ran on the workers: each built its engine there.
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        engines = client.run(_worker_engines)
    assert sum(engines.values()) >= 1


def _worker_engines() -> int:
    from astroingest._executors import worker

    return len(worker._states)


class _Watch:
    """A route that answers slowly and records how many requests overlap, and when each starts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.starts: list[float] = []

    def __call__(self, request: ArchiveRequest) -> Reply:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.starts.append(time.monotonic())
        time.sleep(self.seconds)
        with self.lock:
            self.in_flight -= 1
        return Reply(200, f"path\n{request.path}\n".encode(), "text/csv")


def _watched(archive: ArchiveServer, watch: _Watch, count: int) -> str:
    return ", ".join(
        f'"{archive.route(f"w/{i}.csv", watch, methods=["GET"])}"' for i in range(count)
    )


def test_one_connection_per_host_holds_across_workers(
    cluster: Any, host: Host, tmp_path: Path
) -> None:
    watch = _Watch(0.15)
    with ArchiveServer() as archive:
        toml = f"""{DEFAULTS}
concurrency = 8
[hosts."127.0.0.1"]
connections = 1
[sources.polite]
plugin = "http"
urls = [{_watched(archive, watch, 8)}]
"""
        report = _run(tmp_path, toml, host, cluster.scheduler_address)
    assert report.totals.stored == 8
    assert watch.most == 1  # per-worker budgets alone would let both workers in at once


@pytest.mark.parametrize(
    ("host_table", "source_key"), [('[hosts."127.0.0.1"]\nrate = 8', ""), ("", "rate = 8")]
)
def test_the_rate_holds_across_workers(
    cluster: Any, host: Host, tmp_path: Path, host_table: str, source_key: str
) -> None:
    watch = _Watch(0.0)
    with ArchiveServer() as archive:
        toml = f"""{DEFAULTS}
concurrency = 8
{host_table}
[sources.paced]
plugin = "http"
{source_key}
urls = [{_watched(archive, watch, 8)}]
"""
        report = _run(tmp_path, toml, host, cluster.scheduler_address)
    assert report.totals.stored == 8
    # 8 requests at 8/s span 7/8 s (less the first request's connection setup); two workers
    # each keeping the rate on its own would send them in about half that.
    span = max(watch.starts) - min(watch.starts)
    assert span > 0.7


def _kill_when_stalled(
    cluster: Any, raw: Path, archive: ArchiveServer, killed: list[int], seen: int
) -> Callable[[], None]:
    """Kill the worker transferring slow.bin once part of it is on disk."""

    def kill() -> None:
        deadline = time.monotonic() + 60
        with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
            while time.monotonic() < deadline:
                partial = list(raw.rglob(".slow.bin.*"))
                busy = [
                    address
                    for address, keys in client.processing().items()
                    if any("slow.bin" in str(key) for key in keys)
                ]
                if partial and busy and archive.count("d/slow.bin") == seen + 1:
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.05)

    return kill


def test_a_worker_killed_mid_transfer_loses_nothing(
    cluster: Any, host: Host, tmp_path: Path
) -> None:
    slow = os.urandom(2 << 20)
    with ArchiveServer() as archive:
        urls = [f'"{archive.add(f"d/s{i}.bin", os.urandom(1000))}"' for i in range(6)]
        urls.append(f'"{archive.add("d/slow.bin", slow)}"')
        toml = f'{DEFAULTS}\n[sources.s]\nplugin = "http"\nurls = [{", ".join(urls)}]\n'
        local = _run(tmp_path / "local", toml, host, local=True)

        # The first request for slow.bin sends 1 MiB, then nothing: its worker dies there.
        archive.fault("d/slow.bin", "stall_after:1048576:30")
        raw = tmp_path / "dask" / "astroingest-data" / "raw"
        killed: list[int] = []
        seen = archive.count("d/slow.bin")
        killer = threading.Thread(target=_kill_when_stalled(cluster, raw, archive, killed, seen))
        killer.start()
        dask = _run(tmp_path / "dask", toml, host, cluster.scheduler_address)
        killer.join()
        requests = archive.count("d/slow.bin")

    assert killed, "the transfer was never seen in flight on a worker"
    assert requests == 3  # local run, the killed transfer, its rerun on another worker
    assert _comparable(dask) == _comparable(local)
    assert (raw / "s" / "slow.bin").read_bytes() == slow
    # Stored once: no temp file of the dead writer left beside the objects.
    assert sorted(p.name for p in (raw / "s").iterdir()) == sorted(
        [f"s{i}.bin" for i in range(6)] + ["slow.bin"]
    )
    assert _ledger(tmp_path / "dask") == _ledger(tmp_path / "local")
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for later tests


def test_cli_runs_on_a_scheduler(cluster: Any, tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        urls = [archive.add(f"d/c{i}.csv", b"x\n1\n", content_type="text/csv") for i in range(3)]
        (tmp_path / "sources.toml").write_text(
            f'[sources.c]\nplugin = "http"\nurls = {urls!r}\n'.replace("'", '"')
        )
        done = run_cli(
            [
                "run",
                "--sources",
                "sources.toml",
                "--no-progress",
                "--executor",
                "dask",
                "--scheduler",
                cluster.scheduler_address,
            ],
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "astroingest-data" / "raw" / "c").iterdir()) == [
        "c0.csv",
        "c1.csv",
        "c2.csv",
    ]


def test_cli_scheduler_without_dask_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(
        '[sources.c]\nplugin = "http"\nurls = ["http://127.0.0.1:9/x"]\n'
    )
    done = run_cli(
        ["run", "--sources", "sources.toml", "--scheduler", "tcp://127.0.0.1:8786"], cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "astroingest: error: --scheduler needs --executor dask"
    assert not (tmp_path / "astroingest-data").exists()


def test_cli_without_the_dask_extra_names_it(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    # What an install without the extra looks like to Python.
    (shadow / "distributed.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'distributed'\", name='distributed')\n"
    )
    (tmp_path / "sources.toml").write_text(
        '[sources.c]\nplugin = "http"\nurls = ["http://127.0.0.1:9/x"]\n'
    )
    pythonpath = os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))
    done = run_cli(
        ["run", "--sources", "sources.toml", "--executor", "dask"],
        cwd=tmp_path,
        env={"PYTHONPATH": pythonpath},
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "pip install 'astroingest[dask]'" in done.stderr
    assert not (tmp_path / "astroingest-data").exists()


def test_an_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(
        '[sources.c]\nplugin = "http"\nurls = ["http://127.0.0.1:9/x"]\n'
    )
    done = run_cli(
        [
            "run",
            "--sources",
            "sources.toml",
            "--executor",
            "dask",
            "--scheduler",
            "tcp://127.0.0.1:9",
        ],
        cwd=tmp_path,
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "cannot use the Dask cluster at tcp://127.0.0.1:9" in done.stderr
