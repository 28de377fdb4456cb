"""The admin commands end to end: buckets create, doctor, run into S3, backup, buckets status."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from astroingest._archive_server import ArchiveServer
from tests.conftest import run_cli
from tests.s3server import CREDENTIALS, MotoServer

MiB = 1024 * 1024
PRIMARY, CUBES, BACKUP, LOGS = "astro-primary", "astro-cubes", "astro-backup", "astro-logs"
CSV = b"pl_name,pl_eqt\nTRAPPIST-1 e,250\nKepler-442 b,233\n"


def _sources(tmp_path: Path, endpoint: str, urls: list[str]) -> Path:
    path = tmp_path / "sources.toml"
    listed = ", ".join(f'"{url}"' for url in urls)
    path.write_text(
        f"""
[store]
raw = "s3://{PRIMARY}/raw"
logs = "s3://{LOGS}/logs"
cubes = "file://./data/cubes"
endpoint_url = "{endpoint}"
part_size = {5 * MiB}

[defaults]
retries = 1
backoff = 0.05
max_backoff = 0.1

[buckets]
replication_role_arn = "arn:aws:iam::123456789012:role/astroingest-replication"

[buckets.names]
"zarr-cubes" = "{CUBES}"
"data-backup" = "{BACKUP}"
"logs-metadata" = "{LOGS}"

[sources.mirror]
plugin = "http"
urls = [{listed}]
"""
    )
    return path


def _cli(args: list[str], sources: Path, tmp_path: Path) -> Any:
    # HOME decides where the working copy of an S3-hosted ledger lives.
    env = {**CREDENTIALS, "HOME": str(tmp_path / "home")}
    return run_cli([*args, "--sources", str(sources)], env=env)


def test_buckets_doctor_run_backup_status(s3: MotoServer, tmp_path: Path) -> None:
    big = hashlib.sha256(b"cube").digest() * (6 * MiB // 32 + 5)  # multipart: sha256 in a tag
    with ArchiveServer() as archive:
        urls = [archive.add("planets.csv", CSV, content_type="text/csv"), archive.add("c.bin", big)]
        sources = _sources(tmp_path, s3.endpoint, urls)

        created = _cli(["buckets", "create"], sources, tmp_path)
        assert created.returncode == 0, created.stdout + created.stderr
        doctor = _cli(["doctor"], sources, tmp_path)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        run = _cli(["run"], sources, tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr

    first = _cli(["backup"], sources, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "backup: 2 copied, 0 already there, 0 failed" in first.stdout
    client = s3.client()
    for key, data in (("raw/mirror/planets.csv", CSV), ("raw/mirror/c.bin", big)):
        head = client.head_object(Bucket=BACKUP, Key=key)  # the same keys as in raw
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert client.get_object(Bucket=BACKUP, Key=key)["Body"].read() == data

    again = _cli(["backup"], sources, tmp_path)
    assert "backup: 0 copied, 0 already there, 0 failed" in again.stdout
    # Another machine (no local ledger copy) finds the copies there and copies nothing.
    shutil.rmtree(tmp_path / "home")
    elsewhere = _cli(["backup"], sources, tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr
    assert " 0 copied" in elsewhere.stdout and " 0 failed" in elsewhere.stdout
    assert len(client.list_object_versions(Bucket=BACKUP)["Versions"]) == 2

    status = _cli(["buckets", "status"], sources, tmp_path)
    assert status.returncode == 0, status.stdout
