"""``astroingest backup``: server-side copies on the moto S3 server, streamed ones elsewhere.

The raw objects and the ledger are set up the way a run leaves them (sha256 in the
object's metadata, or in a tag for some multipart uploads; one ledger record per
asset), so each test controls exactly what is there.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from astroingest._backup import BackupOptions, Outcome, backup, part_ranges
from astroingest._config import Config, load_config
from astroingest._exceptions import ConfigError
from astroingest._ledger import Ledger, LedgerRecord, ledger_path
from astroingest._plugins import Host
from tests.conftest import run_cli
from tests.s3server import MotoServer

MiB = 1024 * 1024
PRIMARY = "astro-primary"
BACKUP = "astro-backup"
S3_TO_S3 = f"""
[store]
raw = "s3://{PRIMARY}/raw"
logs = "file://./data/logs"
backup = "s3://{BACKUP}/copies"
"""

Write = Callable[..., Path]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record(source: str, key: str, data: bytes, sha256: str | None = None) -> LedgerRecord:
    return LedgerRecord(
        source,
        key,
        f"https://archive.example.org/{key}",
        None,
        None,
        len(data),
        sha256 or _sha(data),
        "2026-01-01T00:00:00.000Z",
        "run-1",
    )


def _ledger(config: Config) -> Ledger:
    return Ledger(ledger_path(config.directory / "data" / "logs", config.store.logs))


def _land(
    config: Config,
    client: Any,
    source: str,
    key: str,
    data: bytes,
    *,
    how: str = "metadata",
    ledger_sha: str | None = None,
) -> None:
    """A raw object as the S3 store leaves it, and its ledger record."""
    extra: dict[str, Any] = {}
    if how == "metadata":
        extra["Metadata"] = {"sha256": _sha(data)}
    client.put_object(
        Bucket=PRIMARY, Key=f"raw/{source}/{key}", Body=data, ContentType="text/csv", **extra
    )
    if how == "tag":
        client.put_object_tagging(
            Bucket=PRIMARY,
            Key=f"raw/{source}/{key}",
            Tagging={"TagSet": [{"Key": "sha256", "Value": _sha(data)}]},
        )
    ledger = _ledger(config)
    ledger.put_sync(_record(source, key, data, ledger_sha))
    ledger.close()


def _run(config: Config, host: Host, **options: Any) -> dict[str, list[Outcome]]:
    outcomes = asyncio.run(backup(config, host, BackupOptions(**options)))
    by: dict[str, list[Outcome]] = {"copied": [], "present": [], "failed": [], "planned": []}
    for outcome in outcomes:
        by[outcome.status].append(outcome)
    return by


def _body(client: Any, key: str, **version: str) -> bytes:
    return bytes(client.get_object(Bucket=BACKUP, Key=key, **version)["Body"].read())


@pytest.fixture
def s3_setup(s3: MotoServer, write_toml: Write, astroingest_host: Host) -> tuple[Config, Any]:
    client = s3.client()
    for bucket in (PRIMARY, BACKUP):
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return load_config(write_toml(S3_TO_S3), astroingest_host), client


def test_copies_verify_and_a_rerun_copies_nothing(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    config, client = s3_setup
    files = {"a.csv": b"x,y\n1,2\n", "b.csv": b"x,y\n3,4\n" * 1000, "tagged.csv": b"t\n9\n"}
    for key, data in files.items():
        _land(config, client, "lab", key, data, how="tag" if key == "tagged.csv" else "metadata")

    first = _run(config, astroingest_host)
    assert sorted(o.key for o in first["copied"]) == sorted(files)
    assert first["failed"] == []
    for key, data in files.items():
        head = client.head_object(Bucket=BACKUP, Key=f"copies/lab/{key}")
        # The sha256 travels with every copy, also where the raw object had it as a tag.
        assert head["Metadata"]["sha256"] == _sha(data)
        assert head["ContentType"] == "text/csv"
        assert _sha(_body(client, f"copies/lab/{key}")) == _sha(data)

    ledger = _ledger(config)
    recorded = ledger.backups(f"s3://{BACKUP}/copies")
    ledger.close()
    assert [(r.key, r.sha256) for r in recorded] == [(k, _sha(files[k])) for k in sorted(files)]
    assert all(r.backup_key == f"copies/lab/{r.key}" and r.version_id for r in recorded)

    again = _run(config, astroingest_host)
    assert again == {"copied": [], "present": [], "failed": [], "planned": []}
    versions = client.list_object_versions(Bucket=BACKUP)["Versions"]
    assert len(versions) == len(files)  # nothing written twice

    rechecked = _run(config, astroingest_host, recheck=True)
    assert len(rechecked["present"]) == len(files) and rechecked["copied"] == []


def test_only_new_and_changed_assets_are_copied(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    config, client = s3_setup
    _land(config, client, "lab", "a.csv", b"one\n")
    _land(config, client, "lab", "b.csv", b"two\n")
    assert len(_run(config, astroingest_host)["copied"]) == 2

    _land(config, client, "lab", "b.csv", b"two, revised\n")  # a later run stored a new version
    _land(config, client, "lab", "c.csv", b"three\n")
    second = _run(config, astroingest_host)
    assert sorted(o.key for o in second["copied"]) == ["b.csv", "c.csv"]
    assert _body(client, "copies/lab/b.csv") == b"two, revised\n"
    # The older copy stays as an earlier version of the backup object.
    versions = client.list_object_versions(Bucket=BACKUP, Prefix="copies/lab/b.csv")["Versions"]
    assert len(versions) == 2


def test_a_copy_already_there_is_recorded_not_copied(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    config, client = s3_setup
    data = b"replicated\n"
    _land(config, client, "lab", "r.csv", data)
    # As S3 replication (or a run whose ledger was lost) would have left it:
    client.put_object(
        Bucket=BACKUP, Key="copies/lab/r.csv", Body=data, Metadata={"sha256": _sha(data)}
    )
    result = _run(config, astroingest_host)
    assert [o.key for o in result["present"]] == ["r.csv"] and result["copied"] == []
    assert len(client.list_object_versions(Bucket=BACKUP)["Versions"]) == 1
    assert _run(config, astroingest_host)["present"] == []  # recorded in the ledger


def test_multipart_copy_above_the_threshold(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    config, client = s3_setup
    data = bytes(range(256)) * (11 * MiB // 256 + 17)  # 11 MiB and a bit: three 5 MiB parts
    _land(config, client, "big", "cube.nc", data, how="tag")
    result = _run(config, astroingest_host, multipart_threshold=1 * MiB, part_size=5 * MiB)
    assert [o.key for o in result["copied"]] == ["cube.nc"]
    head = client.head_object(Bucket=BACKUP, Key="copies/big/cube.nc")
    assert head["ETag"].endswith('-3"')  # made of three part copies
    assert head["ContentLength"] == len(data)
    assert head["Metadata"]["sha256"] == _sha(data)
    assert head["ContentType"] == "text/csv"
    assert _sha(_body(client, "copies/big/cube.nc")) == _sha(data)
    assert client.list_multipart_uploads(Bucket=BACKUP).get("Uploads", []) == []


def test_part_ranges_cover_the_object_in_at_most_10000_parts() -> None:
    assert part_ranges(11, 5) == [(0, 4), (5, 9), (10, 10)]
    assert part_ranges(10, 5) == [(0, 4), (5, 9)]
    huge = part_ranges(5 * 1024**4, 512 * MiB)  # 5 TiB
    assert len(huge) <= 10_000 and huge[-1][1] == 5 * 1024**4 - 1
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(huge))


def test_a_raw_object_that_differs_from_the_ledger_is_not_copied(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    config, client = s3_setup
    _land(config, client, "lab", "a.csv", b"as stored\n", ledger_sha="0" * 64)
    result = _run(config, astroingest_host)
    [failed] = result["failed"]
    assert "not the version the ledger knows" in (failed.error or "")
    assert "Versions" not in client.list_object_versions(Bucket=BACKUP)


def test_server_checksum_catches_bytes_that_do_not_match_the_ledger(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    """No sha256 on the raw object to compare first: S3's own hash of the copy catches it."""
    config, client = s3_setup
    _land(
        config,
        client,
        "lab",
        "a.csv",
        b"rewritten!\n",
        how="none",
        ledger_sha=_sha(b"original\n\n"),
    )
    result = _run(config, astroingest_host)
    [failed] = result["failed"]
    assert "S3 hashed the copy of lab/a.csv differently" in (failed.error or "")
    # The bad copy is gone: no rerun can take it for a good one.
    assert "Versions" not in client.list_object_versions(Bucket=BACKUP)


def test_deep_reads_multipart_copies_back(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    config, client = s3_setup
    data = b"z" * (6 * MiB)
    wrong = _sha(b"y" * (6 * MiB))
    _land(config, client, "big", "x.bin", data, how="none", ledger_sha=wrong)
    options = {"multipart_threshold": MiB, "part_size": 5 * MiB}
    result = _run(config, astroingest_host, deep=True, **options)
    [failed] = result["failed"]
    assert "does not hash to the ledger's sha256" in (failed.error or "")
    assert "Versions" not in client.list_object_versions(Bucket=BACKUP)


def test_missing_raw_object_fails_that_one_only(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    config, client = s3_setup
    _land(config, client, "lab", "gone.csv", b"1\n")
    _land(config, client, "lab", "kept.csv", b"2\n")
    client.delete_object(Bucket=PRIMARY, Key="raw/lab/gone.csv")
    result = _run(config, astroingest_host)
    assert [o.key for o in result["copied"]] == ["kept.csv"]
    assert [o.key for o in result["failed"]] == ["gone.csv"]
    assert "the raw object is gone" in (result["failed"][0].error or "")


def test_dry_run_lists_and_copies_nothing(
    s3_setup: tuple[Config, Any], astroingest_host: Host
) -> None:
    config, client = s3_setup
    _land(config, client, "lab", "a.csv", b"1\n")
    result = _run(config, astroingest_host, dry_run=True)
    assert [o.key for o in result["planned"]] == ["a.csv"]
    assert "Versions" not in client.list_object_versions(Bucket=BACKUP)


def _local_setup(tmp_path: Path, files: dict[str, bytes], backup: str) -> Path:
    raw = tmp_path / "data" / "raw" / "lab"
    raw.mkdir(parents=True)
    (tmp_path / "data" / "logs").mkdir(parents=True)
    ledger = Ledger(tmp_path / "data" / "logs" / "ledger.sqlite")
    for key, data in files.items():
        (raw / key).write_bytes(data)
        ledger.put_sync(_record("lab", key, data))
    ledger.close()
    text = f'[store]\nraw = "file://./data/raw"\nlogs = "file://./data/logs"\nbackup = "{backup}"\n'
    path = tmp_path / "sources.toml"
    path.write_text(text)
    return path


def test_local_to_local_streams_and_verifies(tmp_path: Path, astroingest_host: Host) -> None:
    files = {"a.csv": b"1,2\n", "b.csv": b"3,4\n" * 5000}
    config = load_config(_local_setup(tmp_path, files, "file://./backup"), astroingest_host)
    first = _run(config, astroingest_host)
    assert sorted(o.key for o in first["copied"]) == ["a.csv", "b.csv"]
    for key, data in files.items():
        assert (tmp_path / "backup" / "lab" / key).read_bytes() == data
    assert _run(config, astroingest_host)["copied"] == []

    (tmp_path / "data" / "raw" / "lab" / "a.csv").write_bytes(b"9,9\n")  # same size, other bytes
    ledger = Ledger(tmp_path / "data" / "logs" / "ledger.sqlite")
    ledger.put_sync(_record("lab", "a.csv", b"1,2\n", _sha(b"5,5\n")))  # a newer run's record
    ledger.close()
    result = _run(config, astroingest_host)
    [failed] = result["failed"]
    assert "does not hash to the ledger's sha256" in (failed.error or "")
    assert (tmp_path / "backup" / "lab" / "a.csv").read_bytes() == b"1,2\n"  # never overwritten


def test_local_raw_to_an_s3_backup(s3: MotoServer, tmp_path: Path, astroingest_host: Host) -> None:
    s3.client().create_bucket(Bucket=BACKUP)
    files = {"a.csv": b"1,2\n", "b.csv": b"3,4\n"}
    config = load_config(_local_setup(tmp_path, files, f"s3://{BACKUP}"), astroingest_host)
    assert len(_run(config, astroingest_host)["copied"]) == 2
    client = s3.client()
    for key, data in files.items():
        assert client.get_object(Bucket=BACKUP, Key=f"lab/{key}")["Body"].read() == data
    assert _run(config, astroingest_host, recheck=True)["present"] != []


def test_backup_may_not_overlap_raw(write_toml: Write, astroingest_host: Host) -> None:
    text = '[store]\nraw = "file://./data/raw"\nbackup = "file://./data/raw/copies"\n'
    with pytest.raises(ConfigError, match=r"\[store\] backup: must not be the raw store"):
        load_config(write_toml(text), astroingest_host)


def test_without_a_backup_store_or_buckets_it_says_what_to_set(
    write_toml: Write, astroingest_host: Host
) -> None:
    config = load_config(write_toml('[store]\nraw = "file://./data/raw"\n'), astroingest_host)
    with pytest.raises(ConfigError, match=r"date = \"YYYYMMDD\""):
        _run(config, astroingest_host)


def test_cli_reports_and_exits_by_outcome(s3_setup: tuple[Config, Any]) -> None:
    config, client = s3_setup
    _land(config, client, "lab", "a.csv", b"1\n")
    _land(config, client, "lab", "bad.csv", b"2\n", ledger_sha="1" * 64)
    result = run_cli(["backup", "--sources", str(config.path)])
    assert result.returncode == 1
    assert "backup: 1 copied, 0 already there, 1 failed" in result.stdout
    assert "failed: lab/bad.csv:" in result.stdout
    fixed = sqlite3.connect(config.directory / "data" / "logs" / "ledger.sqlite")
    fixed.execute("UPDATE assets SET sha256 = ? WHERE key = 'bad.csv'", (_sha(b"2\n"),))
    fixed.commit()
    fixed.close()
    again = run_cli(["backup", "--sources", str(config.path)])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "backup: 1 copied, 0 already there, 0 failed" in again.stdout
    dry = run_cli(["backup", "--sources", str(config.path), "--dry-run"])
    assert dry.returncode == 0 and "would copy 0 objects" in dry.stdout
