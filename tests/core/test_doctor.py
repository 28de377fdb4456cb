"""``astroingest doctor``: good and broken setups, through the real CLI where it matters.

S3 is the moto server on loopback; NCBI is played by pytest-httpx with its real esearch
answer (tests/fixtures/ncbi); a broken third-party plugin is a real distribution on
PYTHONPATH whose entry point fails to import.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpx import HTTPXMock

from astroingest import hookimpl
from astroingest._doctor import Row, diagnose
from astroingest._plugins import Host
from astroingest.doctor import CheckResult, DoctorCheck, DoctorContext
from tests.conftest import REPO, run_cli
from tests.s3server import MotoServer, free_port

API_KEY = "0123456789abcdef0123456789abcdef0123"
ESEARCH = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/esearch.fcgi"
PUBMED_SEARCH = REPO / "tests" / "fixtures" / "ncbi" / "esearch_pubmed_cancer_usehistory.xml"
# NCBI's answer to a key it does not know: HTTP 400 with this JSON, the key echoed back
# (as quoted in public clients' tests, e.g. rentrez's entrez_check tests).
REFUSED = {"error": "API key invalid", "api-key": API_KEY, "type": "invalid", "status": "unknown"}
BUCKETS = ("astro-primary", "astro-cubes", "astro-backup", "astro-logs")
SETUP = """
[store]
raw = "s3://astro-primary/raw"
cubes = "file://./data/cubes"
logs = "file://./data/logs"

[buckets.names]
"zarr-cubes" = "astro-cubes"
"data-backup" = "astro-backup"
"logs-metadata" = "astro-logs"

[sources.lit]
plugin = "ncbi.eutils"
db = "pubmed"
term = "cancer"
email = "data-team@example.org"
api_key = "${NCBI_API_KEY}"

[sources.later]
plugin = "http"
enabled = false
urls = ["https://example.org/a.csv"]
headers = { Authorization = "Bearer ${ARCHIVE_TOKEN}" }
"""

Write = Callable[..., Path]


def _rows(result: Any) -> dict[str, dict[str, str]]:
    return {row["check"]: row for row in json.loads(result.stdout)["checks"]}


def _doctor(path: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    return run_cli(["doctor", "--sources", str(path), "--json", *extra], env=env)


@pytest.fixture
def buckets(s3: MotoServer) -> MotoServer:
    client = s3.client()
    for bucket in BUCKETS:
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return s3


def test_a_good_setup_passes_every_check(
    buckets: MotoServer, write_toml: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCBI_API_KEY", API_KEY)
    result = _doctor(write_toml(SETUP))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result)
    assert {row["state"] for row in rows.values()} <= {"pass", "skip"}
    assert rows["config"]["detail"] == "sources.toml: valid, 2 sources (1 enabled)"
    assert rows["credentials lit"] == {
        "check": "credentials lit",
        "state": "pass",
        "detail": "set: NCBI_API_KEY",
        "fix": "",
    }
    assert rows["credentials later"]["state"] == "skip"  # disabled: its token may be unset
    assert "ARCHIVE_TOKEN" in rows["credentials later"]["detail"]
    for bucket in BUCKETS:
        assert rows[f"bucket {bucket}"]["state"] == "pass"
    assert rows["bucket astro-primary"]["detail"].startswith("raw, data-primary: reachable")
    assert any(c.startswith("store file://") and "cubes" in r["detail"] for c, r in rows.items())
    assert rows["extra s3"]["state"] == "pass"
    assert rows["ncbi api_key (lit)"]["state"] == "pass"
    assert "--online" in rows["ncbi api_key (lit)"]["detail"]
    assert API_KEY not in result.stdout
    # The probes leave nothing behind, not even old versions in versioned buckets.
    client = buckets.client()
    for bucket in BUCKETS:
        listing = client.list_object_versions(Bucket=bucket)
        assert "Versions" not in listing and "DeleteMarkers" not in listing


def test_a_missing_secret_is_named_and_the_rest_still_checked(
    buckets: MotoServer, write_toml: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    path = write_toml(SETUP)
    result = _doctor(path)
    assert result.returncode == 1
    rows = _rows(result)
    assert rows["config"]["state"] == "fail"
    assert "undefined variable ${NCBI_API_KEY}" in rows["config"]["detail"]
    assert rows["credentials lit"]["state"] == "fail"
    assert rows["credentials lit"]["detail"] == "not set: NCBI_API_KEY"
    assert rows["credentials lit"]["fix"] == (
        f"set NCBI_API_KEY in the environment or in {path.parent / '.env'}"
    )
    assert rows["bucket astro-primary"]["state"] == "pass"  # the stores were still checked
    assert "ncbi api_key (lit)" not in rows  # nothing to ask NCBI with


def test_a_dotenv_file_counts(
    buckets: MotoServer, write_toml: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    path = write_toml(SETUP)
    (path.parent / ".env").write_text(f"NCBI_API_KEY={API_KEY}\n")
    result = _doctor(path)
    assert result.returncode == 0, result.stdout
    assert _rows(result)["credentials lit"]["state"] == "pass"
    assert API_KEY not in result.stdout


def test_an_unreachable_s3_endpoint_fails_fast_with_what_to_do(
    s3: MotoServer, write_toml: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCBI_API_KEY", API_KEY)
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _doctor(write_toml(SETUP), env={"AWS_ENDPOINT_URL": dead})
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    rows = _rows(result)
    primary = rows["bucket astro-primary"]
    assert primary["state"] == "fail"
    assert "connection failed" in primary["detail"]
    assert "endpoint_url" in primary["fix"]
    assert rows["config"]["state"] == "pass"


def test_a_missing_bucket_says_to_create_it(
    s3: MotoServer, write_toml: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCBI_API_KEY", API_KEY)
    s3.client().create_bucket(Bucket="astro-primary")
    result = _doctor(write_toml(SETUP))
    assert result.returncode == 1
    rows = _rows(result)
    assert rows["bucket astro-primary"]["state"] == "pass"
    backup = rows["bucket astro-backup"]
    assert backup["state"] == "fail" and "does not exist" in backup["detail"]
    assert "astroingest buckets create" in backup["fix"]


def test_a_broken_plugin_is_named(write_toml: Write, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("raise ImportError('missing libfoo')\n")
    dist = site / "astroingest_broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: astroingest-broken\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text("[astroingest]\nbroken_plugin = broken_plugin\n")
    path = write_toml('[store]\nraw = "file://./data/raw"\n')
    result = _doctor(path, env={"PYTHONPATH": str(site), "ASTROINGEST_DISABLE_PLUGINS": ""})
    assert result.returncode == 1, result.stdout
    row = _rows(result)["plugin broken_plugin"]
    assert row["state"] == "fail"
    assert row["detail"] == "broken, skipped: astroingest-broken: ImportError: missing libfoo"
    assert "ASTROINGEST_DISABLE_PLUGINS=broken_plugin" in row["fix"]
    # Skipping it as the fix says makes the doctor happy again.
    fixed = _doctor(
        path, env={"PYTHONPATH": str(site), "ASTROINGEST_DISABLE_PLUGINS": "broken_plugin"}
    )
    assert fixed.returncode == 0, fixed.stdout


def test_a_broken_config_fails_the_first_row(write_toml: Write) -> None:
    result = _doctor(write_toml('[defaults]\nconcurrency = "16"\n'))
    assert result.returncode == 1
    rows = _rows(result)
    assert (
        rows["config"]["state"] == "fail" and "[defaults] concurrency" in rows["config"]["detail"]
    )
    assert rows["stores"]["state"] == "skip"


def test_table_output_for_people(write_toml: Write) -> None:
    result = run_cli(
        ["doctor", "--sources", str(write_toml('[store]\nraw = "file://./data/raw"\n'))]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "astroingest doctor" in result.stdout and "what to do" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("doctor: ")
    assert " 0 failed" in result.stdout


# -- plugin checks, in process --------------------------------------------------------------


def _run(path: Path, host: Host, online: bool = False) -> dict[str, Row]:
    return {row.check: row for row in asyncio.run(diagnose(path, host, online=online))}


def _ncbi_setup(write_toml: Write) -> Path:
    return write_toml(
        f"""
        [store]
        raw = "file://./data/raw"
        logs = "file://./data/logs"

        [sources.lit]
        plugin = "ncbi.eutils"
        db = "pubmed"
        term = "cancer"
        email = "data-team@example.org"
        api_key = "{API_KEY}"
        """
    )


def test_ncbi_online_check_accepts_a_good_key(
    httpx_mock: HTTPXMock, write_toml: Write, astroingest_host: Host
) -> None:
    httpx_mock.add_response(url=ESEARCH, method="POST", content=PUBMED_SEARCH.read_bytes())
    rows = _run(_ncbi_setup(write_toml), astroingest_host, online=True)
    row = rows["ncbi api_key (lit)"]
    assert (row.state, row.detail) == ("pass", "api_key accepted by NCBI")
    [request] = httpx_mock.get_requests()
    form = parse_qs(request.content.decode())
    assert form["api_key"] == [API_KEY] and form["retmax"] == ["0"]
    assert API_KEY not in str(request.url)  # POSTed: the key stays out of URLs and logs


def test_ncbi_online_check_names_a_refused_key_without_its_value(
    httpx_mock: HTTPXMock, write_toml: Write, astroingest_host: Host
) -> None:
    httpx_mock.add_response(url=ESEARCH, method="POST", status_code=400, json=REFUSED)
    rows = _run(_ncbi_setup(write_toml), astroingest_host, online=True)
    row = rows["ncbi api_key (lit)"]
    assert row.state == "fail"
    assert row.detail == "NCBI refused the api_key (API key invalid)"
    assert "API Key Management" in row.fix
    assert all(API_KEY not in f"{r.detail} {r.fix}" for r in rows.values())


def test_ncbi_check_stays_offline_without_online(
    httpx_mock: HTTPXMock, write_toml: Write, astroingest_host: Host
) -> None:
    rows = _run(_ncbi_setup(write_toml), astroingest_host)
    assert rows["ncbi api_key (lit)"].state == "pass"
    assert httpx_mock.get_requests() == []


class _Checks:
    @hookimpl
    def astroingest_doctor_checks(self) -> list[DoctorCheck]:
        async def fine(ctx: DoctorContext) -> list[CheckResult]:
            state = "online" if ctx.online else "offline"
            return [CheckResult.passed(f"ran {state}", subject="a")]

        async def crashes(ctx: DoctorContext) -> list[CheckResult]:
            raise RuntimeError("plugin bug")

        return [DoctorCheck("mine", fine), DoctorCheck("buggy", crashes)]


class _BrokenHook:
    @hookimpl
    def astroingest_doctor_checks(self) -> list[DoctorCheck]:
        raise RuntimeError("cannot even list checks")


def test_plugins_contribute_checks_and_their_failures_are_rows(
    write_toml: Write, astroingest_host: Host, register_plugin: Callable[..., str]
) -> None:
    register_plugin(_Checks(), "checks")
    name = register_plugin(_BrokenHook(), "broken-hook")
    info = astroingest_host.infos[name]
    astroingest_host.infos[name] = info.__class__(name, "broken-dist", "1.0", False)
    rows = _run(write_toml('[store]\nraw = "file://./data/raw"\n'), astroingest_host)
    assert (rows["mine (a)"].state, rows["mine (a)"].detail) == ("pass", "ran offline")
    assert rows["buggy"].state == "fail"
    assert rows["buggy"].detail == "the check itself failed: RuntimeError: plugin bug"
    assert "checks" in rows["buggy"].fix
    assert rows["plugin broken-hook"].state == "fail"
    assert "cannot even list checks" in rows["plugin broken-hook"].detail


def test_the_hook_is_listed_for_the_ncbi_plugin(astroingest_host: Host) -> None:
    assert "astroingest_doctor_checks" in astroingest_host.hooks_of("astroingest_plugins.ncbi")
    names = [check.name for check, _ in astroingest_host.doctor_checks()]
    assert "ncbi api_key" in names


def test_doctor_does_not_import_aioboto3_for_local_setups(write_toml: Write) -> None:
    path = write_toml('[store]\nraw = "file://./data/raw"\n')
    code = textwrap.dedent(
        f"""
        import sys
        from astroingest.cli import main
        code = main(["doctor", "--sources", {str(path)!r}, "--json"])
        assert "aioboto3" not in sys.modules, "aioboto3 imported"
        sys.exit(code)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
