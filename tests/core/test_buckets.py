"""``astroingest buckets create|status`` against the moto S3 server.

moto stores but never enforces lifecycle, replication and public-access settings, so
these tests check what the API answers (get_bucket_lifecycle_configuration & co.).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from astroingest._buckets import backup_url, create, role_buckets, status
from astroingest._config import Config, load_config
from astroingest._exceptions import ConfigError
from astroingest._plugins import Host
from tests.conftest import run_cli
from tests.s3server import FaultyProxy, MotoServer

ROLE_ARN = "arn:aws:iam::123456789012:role/astroingest-replication"
PRIMARY = "astro-primary"
CUBES = "astrobio-zarr-cubes-20260101"
BACKUP = "astrobio-data-backup-20260101"
LOGS = "astrobio-logs-metadata-20260101"
SETUP = f"""
[store]
raw = "s3://{PRIMARY}/raw"
logs = "s3://{LOGS}/logs"
cubes = "file://./data/cubes"

[buckets]
date = "20260101"
replication_role_arn = "{ROLE_ARN}"
raw_tiering_days = 45
logs_expire_days = 90
"""

Write = Callable[..., Path]


def _config(write_toml: Write, astroingest_host: Host, text: str = SETUP) -> Config:
    return load_config(write_toml(text), astroingest_host)


def _settings(client: Any, bucket: str) -> dict[str, Any]:
    """Everything buckets create sets, as the server reports it."""
    found: dict[str, Any] = {}
    for name, call in (
        ("versioning", client.get_bucket_versioning),
        ("encryption", client.get_bucket_encryption),
        ("public", client.get_public_access_block),
        ("lifecycle", client.get_bucket_lifecycle_configuration),
        ("replication", client.get_bucket_replication),
    ):
        try:
            answer = call(Bucket=bucket)
        except client.exceptions.ClientError as error:
            answer = {"error": error.response["Error"]["Code"]}
        answer.pop("ResponseMetadata", None)
        found[name] = answer
    return found


def _rules(client: Any, bucket: str) -> dict[str, dict[str, Any]]:
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return {rule["ID"]: rule for rule in rules}


def test_bucket_names_come_from_store_urls_then_names_then_template(
    write_toml: Write, astroingest_host: Host
) -> None:
    config = _config(
        write_toml,
        astroingest_host,
        SETUP + '[buckets.names]\n"zarr-cubes" = "my-cubes"\n',
    )
    roles = role_buckets(config)
    assert (roles["data-primary"].bucket, roles["data-primary"].prefix) == (PRIMARY, "raw/")
    assert roles["zarr-cubes"].bucket == "my-cubes"
    assert (roles["data-backup"].bucket, roles["data-backup"].prefix) == (BACKUP, "raw/")
    assert (roles["logs-metadata"].bucket, roles["logs-metadata"].prefix) == (LOGS, "logs/")
    # Without [store] backup, the backup keeps raw's keys, as replication would.
    assert backup_url(config) == f"s3://{BACKUP}/raw"


def test_a_template_name_needs_the_date(write_toml: Write, astroingest_host: Host) -> None:
    config = _config(write_toml, astroingest_host, '[store]\nraw = "s3://astro-primary/raw"\n')
    with pytest.raises(ConfigError, match=r"\[buckets\]: required to name the zarr-cubes bucket"):
        role_buckets(config)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('template = "astrobio-{date}"', "must contain {role}"),
        ('template = "astrobio-{role}-{user}"', "not {user}"),
        ('date = "2026-01-01"', "YYYYMMDD"),
        ('date = "20261301"', "YYYYMMDD"),
        ('kms_key_id = "abc"', 'kms_key_id goes with encryption = "SSE-KMS"'),
        ("backup_glacier_days = 30\nbackup_deep_archive_days = 60", "at least backup_glacier"),
        ('versioning = false\nreplication_role_arn = "arn:aws:iam::1:role/r"', "versioning"),
        ('[buckets.names]\n"data-primary" = "Bad_Name"', "not a valid S3 bucket name"),
        ('[buckets.names]\nprimary = "abc"', "unknown key"),
    ],
)
def test_bad_bucket_settings_are_one_line_config_errors(
    write_toml: Write, astroingest_host: Host, table: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _config(write_toml, astroingest_host, f"[buckets]\n{table}\n")
    assert message in str(info.value)
    assert "\n" not in str(info.value) and "[buckets" in str(info.value)


def test_explicit_name_must_agree_with_the_store_url(
    write_toml: Write, astroingest_host: Host
) -> None:
    config = _config(
        write_toml, astroingest_host, SETUP + '[buckets.names]\n"data-primary" = "other"\n'
    )
    with pytest.raises(ConfigError, match="'other', but \\[store\\] raw is in bucket"):
        role_buckets(config)


def test_create_sets_everything_and_a_second_create_changes_nothing(
    s3: MotoServer, write_toml: Write
) -> None:
    path = write_toml(SETUP)
    first = run_cli(["buckets", "create", "--sources", str(path), "--json"])
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["ok"] is True
    assert set(report["buckets"]) == {PRIMARY, CUBES, BACKUP, LOGS}
    created = {(r["bucket"], r["setting"]): r["state"] for r in report["settings"]}
    assert {created[(b, "exists")] for b in (PRIMARY, CUBES, BACKUP, LOGS)} == {"created"}
    assert created[(PRIMARY, "replication")] == "set"

    client = s3.client()
    for bucket in (PRIMARY, CUBES, BACKUP, LOGS):
        assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        sse = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        abort = _rules(client, bucket)["astroingest-abort-multipart"]
        assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    tiering = _rules(client, PRIMARY)["astroingest-raw-tiering"]
    assert tiering["Filter"] == {"Prefix": "raw/"}
    assert tiering["Transitions"] == [{"Days": 45, "StorageClass": "INTELLIGENT_TIERING"}]
    archive = _rules(client, BACKUP)["astroingest-backup-archive"]
    assert archive["Transitions"] == [
        {"Days": 30, "StorageClass": "GLACIER"},
        {"Days": 180, "StorageClass": "DEEP_ARCHIVE"},
    ]
    expire = _rules(client, LOGS)
    assert expire["astroingest-logs-expire"]["Filter"] == {"Prefix": "logs/runs/"}
    assert expire["astroingest-logs-expire"]["Expiration"] == {"Days": 90}
    # The default quarantine (<logs>/quarantine) is in the logs bucket: it expires too.
    assert expire["astroingest-quarantine-expire"]["Filter"] == {"Prefix": "logs/quarantine/"}
    replication = client.get_bucket_replication(Bucket=PRIMARY)["ReplicationConfiguration"]
    assert replication["Role"] == ROLE_ARN
    [rule] = replication["Rules"]
    assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{BACKUP}"
    assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}

    before = {bucket: _settings(client, bucket) for bucket in (PRIMARY, CUBES, BACKUP, LOGS)}
    second = run_cli(["buckets", "create", "--sources", str(path), "--json"])
    assert second.returncode == 0, second.stderr
    states = {r["state"] for r in json.loads(second.stdout)["settings"]}
    assert states == {"unchanged"}
    after = {bucket: _settings(client, bucket) for bucket in (PRIMARY, CUBES, BACKUP, LOGS)}
    assert after == before


def test_status_exits_non_zero_on_drift_and_names_it(s3: MotoServer, write_toml: Write) -> None:
    path = write_toml(SETUP)
    assert run_cli(["buckets", "create", "--sources", str(path)]).returncode == 0
    clean = run_cli(["buckets", "status", "--sources", str(path)])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "drift" not in clean.stdout

    client = s3.client()
    client.put_bucket_versioning(Bucket=BACKUP, VersioningConfiguration={"Status": "Suspended"})
    client.delete_public_access_block(Bucket=CUBES)
    rules = client.get_bucket_lifecycle_configuration(Bucket=PRIMARY)["Rules"]
    for rule in rules:
        if rule["ID"] == "astroingest-raw-tiering":
            rule["Transitions"][0]["Days"] = 10
    client.put_bucket_lifecycle_configuration(
        Bucket=PRIMARY, LifecycleConfiguration={"Rules": rules}
    )

    drifted = run_cli(["buckets", "status", "--sources", str(path)])
    assert drifted.returncode == 1
    lines = [line for line in drifted.stdout.splitlines() if line.startswith("drift:")]
    assert f"drift: {BACKUP} versioning: expected Enabled, found Suspended" in lines
    assert f"drift: {CUBES} public access: expected all blocked, found not configured" in lines
    assert any(
        line.startswith(f"drift: {PRIMARY} lifecycle astroingest-raw-tiering")
        and "after 10 d" in line
        for line in lines
    )
    assert len(lines) == 3

    as_json = run_cli(["buckets", "status", "--sources", str(path), "--json"])
    assert as_json.returncode == 1
    drift = [r for r in json.loads(as_json.stdout)["settings"] if r["state"] == "drift"]
    assert {(r["bucket"], r["setting"]) for r in drift} == {
        (BACKUP, "versioning"),
        (CUBES, "public access"),
        (PRIMARY, "lifecycle astroingest-raw-tiering"),
    }

    fixed = run_cli(["buckets", "create", "--sources", str(path)])
    assert fixed.returncode == 0, fixed.stdout
    assert run_cli(["buckets", "status", "--sources", str(path)]).returncode == 0


def test_a_missing_bucket_is_drift(
    s3: MotoServer, write_toml: Write, astroingest_host: Host
) -> None:
    config = _config(write_toml, astroingest_host)
    rows = asyncio.run(status(config))
    assert {(r.setting, r.actual, r.state) for r in rows} == {("exists", "no", "drift")}
    assert len(rows) == 4


def test_rules_of_others_are_kept_and_ours_removed_when_turned_off(
    s3: MotoServer, write_toml: Write, astroingest_host: Host
) -> None:
    client = s3.client()
    client.create_bucket(Bucket=PRIMARY)
    theirs = {
        "ID": "team-scratch",
        "Status": "Enabled",
        "Filter": {"Prefix": "scratch/"},
        "Expiration": {"Days": 7},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=PRIMARY, LifecycleConfiguration={"Rules": [theirs]}
    )
    asyncio.run(create(_config(write_toml, astroingest_host)))
    assert set(_rules(client, PRIMARY)) == {
        "team-scratch",
        "astroingest-raw-tiering",
        "astroingest-abort-multipart",
    }

    off = SETUP.replace("raw_tiering_days = 45", "raw_tiering_days = 0")
    config = _config(write_toml, astroingest_host, off)
    drift = [r for r in asyncio.run(status(config)) if r.state == "drift"]
    assert [(r.setting, r.expected) for r in drift] == [
        ("lifecycle astroingest-raw-tiering", "absent")
    ]
    rows = asyncio.run(create(config))
    assert [r.state for r in rows if r.setting == "lifecycle astroingest-raw-tiering"] == ["set"]
    assert set(_rules(client, PRIMARY)) == {"team-scratch", "astroingest-abort-multipart"}
    assert _rules(client, PRIMARY)["team-scratch"]["Expiration"] == {"Days": 7}


def test_sse_kms_with_its_key(s3: MotoServer, write_toml: Write, astroingest_host: Host) -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d"
    text = SETUP + f'encryption = "SSE-KMS"\nkms_key_id = "{key}"\n'
    rows = asyncio.run(create(_config(write_toml, astroingest_host, text)))
    assert all(not r.state.startswith("failed") for r in rows)
    sse = s3.client().get_bucket_encryption(Bucket=BACKUP)["ServerSideEncryptionConfiguration"]
    default = sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    replication = s3.client().get_bucket_replication(Bucket=PRIMARY)["ReplicationConfiguration"]
    destination = replication["Rules"][0]["Destination"]
    assert destination["EncryptionConfiguration"] == {"ReplicaKmsKeyID": key}


def test_replication_without_a_role_is_skipped_and_said(
    s3: MotoServer, write_toml: Write, astroingest_host: Host
) -> None:
    text = SETUP.replace(f'replication_role_arn = "{ROLE_ARN}"\n', "")
    rows = asyncio.run(create(_config(write_toml, astroingest_host, text)))
    [row] = [r for r in rows if r.setting == "replication"]
    assert row.state == "skipped"
    assert "needs replication_role_arn" in row.expected and "replication = false" in row.expected
    assert not any(r.state.startswith("failed") for r in rows)
    client = s3.client()
    with pytest.raises(client.exceptions.ClientError):
        client.get_bucket_replication(Bucket=PRIMARY)


def test_a_server_that_refuses_replication_is_named(
    s3: MotoServer, write_toml: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(SETUP)
    with FaultyProxy(s3.endpoint) as proxy:
        proxy.fail("PUT /astro-primary?replication", 1000, 501, "NotImplemented")
        result = run_cli(
            ["buckets", "create", "--sources", str(path)], env={"AWS_ENDPOINT_URL": proxy.endpoint}
        )
    assert result.returncode == 1
    [line] = [line for line in result.stdout.splitlines() if line.startswith("failed:")]
    assert line.startswith(f"failed: {PRIMARY} replication: NotImplemented")
    assert "set replication = false" in line
    # Everything else was still set up.
    assert s3.client().get_bucket_versioning(Bucket=BACKUP)["Status"] == "Enabled"


def test_unreachable_endpoint_is_one_line(write_toml: Write) -> None:
    from tests.s3server import free_port

    path = write_toml(SETUP + "\n[defaults]\nretries = 0\n")
    result = run_cli(
        ["buckets", "status", "--sources", str(path)],
        env={
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
        },
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "connection failed" in lines[0], result.stderr
