"""`astroingest run` into S3 (moto on loopback): raw objects, report and ledger in the store."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astroingest._archive_server import ArchiveServer
from tests.conftest import run_cli
from tests.s3server import CREDENTIALS, FaultyProxy, MotoServer

MiB = 1024 * 1024
RAW, LOGS = "astro-data-primary", "astro-logs-metadata"
CSV = b"pl_name,pl_eqt\nTRAPPIST-1 e,250\nKepler-442 b,233\n"


def big_body(size: int) -> bytes:
    block = hashlib.sha256(b"grid").digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def write_sources(tmp_path: Path, endpoint: str, urls: list[str], logs: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(
        f"""
[store]
raw = "s3://{RAW}/raw"
logs = "{logs}"
endpoint_url = "{endpoint}"
part_size = {5 * MiB}
parts_in_flight = 2

[defaults]
retries = 2
backoff = 0.05
max_backoff = 0.2
read_timeout = 5

[sources.mirror]
plugin = "http"
urls = {json.dumps(urls)}
"""
    )
    return path


def cli_env(tmp_path: Path) -> dict[str, str]:
    # HOME decides where the working copy of an S3-hosted ledger lives.
    return {**CREDENTIALS, "HOME": str(tmp_path / "home")}


def objects(client: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def pending(client: Any, bucket: str) -> list[Any]:
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_run_lands_objects_report_and_ledger_in_s3(s3: MotoServer, tmp_path: Path) -> None:
    client = s3.client()
    for bucket in (RAW, LOGS):
        client.create_bucket(Bucket=bucket)
    big = big_body(12 * MiB + 3)
    with ArchiveServer() as archive:
        urls = [
            archive.add("pscomppars.csv", CSV, content_type="text/csv"),
            archive.add("cube.bin", big),
        ]
        sources = write_sources(tmp_path, s3.endpoint, urls, f"s3://{LOGS}/logs")
        first = run_cli(["run", "--sources", str(sources)], env=cli_env(tmp_path))
        assert first.returncode == 0, first.stderr

        raw = objects(client, RAW)
        assert raw == {"raw/mirror/pscomppars.csv": CSV, "raw/mirror/cube.bin": big}
        head = client.head_object(Bucket=RAW, Key="raw/mirror/pscomppars.csv")
        assert head["Metadata"]["sha256"] == hashlib.sha256(CSV).hexdigest()
        tags = client.get_object_tagging(Bucket=RAW, Key="raw/mirror/cube.bin")["TagSet"]
        assert {"Key": "sha256", "Value": hashlib.sha256(big).hexdigest()} in tags
        assert pending(client, RAW) == []

        logs = objects(client, LOGS, "logs/")
        [report_key] = [k for k in logs if k.startswith("logs/runs/")]
        report = json.loads(logs[report_key])
        assert report["status"] == "ok"
        assert report["totals"]["stored"] == 2
        assert report["totals"]["bytes"] == len(CSV) + len(big)
        assert "logs/ledger.sqlite" in logs
        assert report_key.removeprefix("logs/") in first.stdout  # the summary names it

        # A new machine (no local state) reruns: the ledger comes from S3, nothing moves.
        shutil.rmtree(tmp_path / "home")
        second = run_cli(["run", "--sources", str(sources)], env=cli_env(tmp_path))
        assert second.returncode == 0, second.stderr
        reports = sorted(k for k in objects(client, LOGS, "logs/runs/"))
        latest = json.loads(objects(client, LOGS, reports[-1])[reports[-1]])
        assert latest["totals"]["unchanged"] == 2 and latest["totals"]["stored"] == 0
        versions = client.list_object_versions(Bucket=RAW).get("Versions", [])
        assert len(versions) == 2  # no object written twice


@pytest.fixture
def own_server() -> Iterator[MotoServer]:
    """A server of this test's own, which it may stop and start again."""
    server = MotoServer().start()
    yield server
    server.stop()


def test_s3_server_gone_mid_upload_fails_cleanly_and_a_rerun_completes(
    own_server: MotoServer, tmp_path: Path
) -> None:
    client = own_server.client()
    client.create_bucket(Bucket=RAW)
    big = big_body(16 * MiB)
    with ArchiveServer() as archive:
        url = archive.add("cube.bin", big)
        archive.fault("cube.bin", f"stall_after:{11 * MiB}:4")
        sources = write_sources(tmp_path, own_server.endpoint, [url], (tmp_path / "logs").as_uri())
        process = start_cli(sources, tmp_path)
        wait_for(lambda: parts_uploaded(client) >= 2, process)
        own_server.stop()
        out, err = process.communicate(timeout=120)
        assert process.returncode == 1, err
        assert RAW in out + err  # the failure names the bucket
        assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in out + err

        own_server.start()  # a fresh, empty server on the same port
        client = own_server.client()
        client.create_bucket(Bucket=RAW)
        again = run_cli(["run", "--sources", str(sources)], env=cli_env(tmp_path))
        assert again.returncode == 0, again.stderr
    assert objects(client, RAW) == {"raw/mirror/cube.bin": big}
    assert pending(client, RAW) == []


def test_killed_mid_upload_the_rerun_sends_only_the_missing_parts(
    s3: MotoServer, tmp_path: Path
) -> None:
    client = s3.client()
    client.create_bucket(Bucket=RAW)
    big = big_body(21 * MiB)  # four parts of 5 MiB, one of 1 MiB
    with ArchiveServer() as archive, FaultyProxy(s3.endpoint) as proxy:
        url = archive.add("cube.bin", big)
        archive.fault("cube.bin", f"stall_after:{16 * MiB}:30")
        sources = write_sources(tmp_path, proxy.endpoint, [url], (tmp_path / "logs").as_uri())
        process = start_cli(sources, tmp_path)
        wait_for(lambda: parts_uploaded(client) >= 3, process)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert len(pending(client, RAW)) == 1

        proxy.seen.clear()
        again = run_cli(["run", "--sources", str(sources)], env=cli_env(tmp_path))
        assert again.returncode == 0, again.stderr
        sent = [line for line in proxy.seen if line.startswith("PUT") and "partNumber=" in line]
    assert sorted(line.split("partNumber=")[1][:1] for line in sent) == ["4", "5"]
    assert objects(client, RAW) == {"raw/mirror/cube.bin": big}
    assert pending(client, RAW) == []


def start_cli(sources: Path, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "astroingest", "run", "--sources", str(sources)],
        env={**os.environ, **cli_env(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def parts_uploaded(client: Any) -> int:
    uploads = pending(client, RAW)
    if not uploads:
        return 0
    upload = uploads[0]
    listed = client.list_parts(Bucket=RAW, Key=upload["Key"], UploadId=upload["UploadId"])
    return len(listed.get("Parts", []))


def wait_for(condition: Any, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("timed out waiting")
