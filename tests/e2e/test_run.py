"""`astroingest run` end to end: land, verify, validate, report, rerun incrementally."""

from __future__ import annotations

import json
import os
from pathlib import Path

from astroingest._archive_server import ArchiveServer
from tests.conftest import run_cli
from tests.e2e.conftest import ledger_rows, partials, reports, sha256, stored

CSV = b"pl_name,pl_eqt\nTRAPPIST-1 e,250\nKepler-442 b,233\n"
FITS = (
    b"SIMPLE  =                    T"
    + b" " * 50
    + b"BITPIX  =                    8"
    + b" " * 50
    + b"NAXIS   =                    0"
    + b" " * 50
    + b"END"
    + b" " * 77
).ljust(2880, b" ")
JSON = json.dumps({"feed": {"entry": [{"id": "G1"}]}}).encode()
HTML = (
    b"<!DOCTYPE html><html><head><title>Earthdata Login</title></head><body>Sign in</body></html>"
)


def write_sources(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text("[defaults]\nbackoff = 0.05\nmax_backoff = 0.2\nread_timeout = 2\n" + body)
    return path


def test_run_lands_verified_data_then_reruns_incrementally(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        urls = [
            archive.add("pscomppars.csv", CSV, content_type="text/csv"),
            archive.add("image.fits", FITS, content_type="application/fits"),
            archive.add("granules.json", JSON, content_type="application/json"),
        ]
        sources = write_sources(
            tmp_path,
            f"""
[sources.mirror]
plugin = "http"
urls = {json.dumps(urls)}
""",
        )
        first = run_cli(["run", "--sources", str(sources)])
        assert first.returncode == 0, first.stderr
        assert "3" in first.stdout and "report:" in first.stdout

        data = tmp_path / "astroingest-data"
        assert stored(data, "mirror") == {
            "pscomppars.csv": CSV,
            "image.fits": FITS,
            "granules.json": JSON,
        }
        [report] = reports(data)
        assert report["status"] == "ok"
        assert report["totals"] == {
            "stored": 3,
            "unchanged": 0,
            "failed": 0,
            "quarantined": 0,
            "skipped": 0,
            "bytes": len(CSV) + len(FITS) + len(JSON),
        }
        by_key = {a["key"]: a for a in report["assets"]}
        assert by_key["image.fits"]["sha256"] == sha256(FITS)
        assert by_key["image.fits"]["quality"] == 1.0
        assert {a["attempts"] for a in report["assets"]} == {1}
        assert {a["source"] for a in report["assets"]} == {"mirror"}
        assert [row[1] for row in ledger_rows(data)] == [
            "granules.json",
            "image.fits",
            "pscomppars.csv",
        ]

        second = run_cli(["run", "--sources", str(sources)])
        assert second.returncode == 0, second.stderr
        latest = reports(data)[-1]
        assert latest["totals"]["unchanged"] == 3 and latest["totals"]["stored"] == 0
        conditional = [
            r for r in archive.requests("pscomppars.csv") if "if-none-match" in r.headers
        ]
        assert len(conditional) == 1
        assert conditional[0].status == 304
        assert partials(data) == []


def test_same_bytes_under_a_new_etag_count_as_unchanged(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        url = archive.add("a.csv", CSV, content_type="text/csv", etag='"v1"')
        sources = write_sources(tmp_path, f'[sources.m]\nplugin = "http"\nurls = ["{url}"]\n')
        assert run_cli(["run", "--sources", str(sources)]).returncode == 0
        archive.add("a.csv", CSV, content_type="text/csv", etag='"v2"')
        assert run_cli(["run", "--sources", str(sources)]).returncode == 0
        archive.add("a.csv", CSV + b"Proxima b,234\n", content_type="text/csv", etag='"v3"')
        assert run_cli(["run", "--sources", str(sources)]).returncode == 0
    data = tmp_path / "astroingest-data"
    totals = [r["totals"] for r in reports(data)]
    assert [(t["stored"], t["unchanged"]) for t in totals] == [(1, 0), (0, 1), (1, 0)]
    assert stored(data, "m")["a.csv"].endswith(b"Proxima b,234\n")


def test_html_login_page_is_quarantined_never_stored(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        url = archive.add("granule.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        archive.fault("granule.h5", "html")
        sources = write_sources(tmp_path, f'[sources.cmr]\nplugin = "http"\nurls = ["{url}"]\n')
        result = run_cli(["run", "--sources", str(sources)])
    assert result.returncode == 1
    data = tmp_path / "astroingest-data"
    assert stored(data, "cmr") == {}
    quarantined = data / "logs" / "quarantine" / "cmr"
    assert (quarantined / "granule.h5").read_bytes().startswith(b"<!DOCTYPE html>")
    quality = json.loads((quarantined / "granule.h5.quality.json").read_text())
    assert quality["quality"]["score"] == 0
    assert any(c["name"] == "not_html" and not c["passed"] for c in quality["quality"]["checks"])
    [report] = reports(data)
    assert report["status"] == "failed" and report["totals"]["quarantined"] == 1
    assert "quarantined: cmr/granule.h5" in result.stdout


def test_permanent_errors_fail_fast_and_others_still_land(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        good = archive.add("ok.csv", CSV, content_type="text/csv")
        missing = archive.url("missing.csv")
        sources = write_sources(
            tmp_path, f'[sources.m]\nplugin = "http"\nurls = ["{good}", "{missing}"]\n'
        )
        result = run_cli(["run", "--sources", str(sources)])
        assert archive.count("missing.csv") == 1  # a 404 is not retried
    assert result.returncode == 1
    [report] = reports(tmp_path / "astroingest-data")
    failed = [a for a in report["assets"] if a["status"] == "failed"]
    assert [(a["key"], a["error"]) for a in failed] == [
        ("missing.csv", f"HTTP 404 Not Found for {missing}")
    ]
    assert report["totals"]["stored"] == 1


def test_index_with_checksums(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        archive.add("files/a.csv", CSV, content_type="text/csv")
        archive.add("files/b.fits", FITS)
        index = archive.add_json(
            "index.json",
            [
                {"url": "files/a.csv", "sha256": sha256(CSV), "size": len(CSV)},
                {"url": archive.url("files/b.fits"), "sha256": "0" * 64},
            ],
        )
        sources = write_sources(
            tmp_path,
            f'[sources.idx]\nplugin = "http"\nindex = "{index}"\nretries = 0\n'.replace(
                "retries = 0\n", ""
            ),
        )
        result = run_cli(["run", "--sources", str(sources)])
    assert result.returncode == 1
    [report] = reports(tmp_path / "astroingest-data")
    status = {a["key"]: (a["status"], a["error"]) for a in report["assets"]}
    assert status["a.csv"] == ("stored", None)
    assert status["b.fits"][0] == "failed" and "sha256 mismatch" in status["b.fits"][1]
    assert stored(tmp_path / "astroingest-data", "idx") == {"a.csv": CSV}


def test_files_source_goes_through_the_same_path(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    (lab / "2024" / "jan").mkdir(parents=True)
    (lab / "2024" / "jan" / "t.csv").write_bytes(CSV)
    (lab / "2024" / "notes.txt").write_text("field notes\n")
    sources = write_sources(
        tmp_path,
        '[sources.lab]\nplugin = "files"\npaths = ["lab/**/*.csv", "lab/2024/notes.txt"]\n',
    )
    first = run_cli(["run", "--sources", str(sources)])
    assert first.returncode == 0, first.stderr
    data = tmp_path / "astroingest-data"
    assert stored(data, "lab") == {"2024/jan/t.csv": CSV, "notes.txt": b"field notes\n"}
    assert run_cli(["run", "--sources", str(sources)]).returncode == 0
    assert reports(data)[-1]["totals"]["unchanged"] == 2


def test_dry_run_plans_and_writes_nothing(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        index = archive.add_json("index.json", [{"url": "a.csv", "size": 123}])
        sources = write_sources(tmp_path, f'[sources.idx]\nplugin = "http"\nindex = "{index}"\n')
        result = run_cli(["run", "--sources", str(sources), "--dry-run"])
        assert archive.count("a.csv") == 0
    assert result.returncode == 0, result.stderr
    assert "idx/a.csv  123 B" in result.stdout
    assert "would fetch 1 assets" in result.stdout
    assert not (tmp_path / "astroingest-data").exists()


def test_only_selects_sources_and_unknown_names_are_usage_errors(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        a, b = (
            archive.add("a.csv", CSV, content_type="text/csv"),
            archive.add("b.csv", CSV, content_type="text/csv"),
        )
        sources = write_sources(
            tmp_path,
            f'[sources.one]\nplugin = "http"\nurls = ["{a}"]\n[sources.two]\nplugin = "http"\nurls = ["{b}"]\n',
        )
        assert run_cli(["run", "--sources", str(sources), "--only", "two"]).returncode == 0
        assert archive.count("a.csv") == 0
        bad = run_cli(["run", "--sources", str(sources), "--only", "three"])
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "astroingest: error: sources.toml: --only three: no such source (known: one, two)"
    )


def test_config_error_is_one_line_exit_2_nothing_written(tmp_path: Path) -> None:
    sources = write_sources(
        tmp_path, '[sources.a]\nplugin = "http"\nurls = ["https://x.org/a"]\nconcurrency = "4"\n'
    )
    result = run_cli(["run", "--sources", str(sources)])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "astroingest: error: sources.toml: [sources.a] concurrency: Input should be a valid integer (line 8)"
    ]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sources.toml"]


def test_secrets_never_reach_logs_reports_or_the_ledger(tmp_path: Path) -> None:
    token = "s3cr3t-t0ken-value"
    with ArchiveServer() as archive:
        archive.require_header("Authorization", f"Bearer {token}")
        good = archive.add("a.csv", CSV, content_type="text/csv")
        archive.add("gone.csv", CSV, content_type="text/csv")
        archive.fault("gone.csv", "500", "500", "500", "500", "500", "500")
        sources = write_sources(
            tmp_path,
            f"""
[sources.private]
plugin = "http"
urls = ["{good}", "{archive.url("gone.csv")}?api_key=${{ARCHIVE_TOKEN}}"]
headers = {{ Authorization = "Bearer ${{ARCHIVE_TOKEN}}" }}
""",
        )
        result = run_cli(["run", "--sources", str(sources), "-v"], env={"ARCHIVE_TOKEN": token})
    assert result.returncode == 1
    data = tmp_path / "astroingest-data"
    assert stored(data, "private") == {"a.csv": CSV}
    everything = (
        result.stdout
        + result.stderr
        + (data / "logs" / "ledger.sqlite").read_bytes().decode("latin-1")
    )
    everything += "".join(p.read_text() for p in (data / "logs" / "runs").glob("*.json"))
    assert token not in everything
    assert "api_key=REDACTED" in everything


def test_env_file_beside_sources(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        archive.require_header("Authorization", "Bearer from-dotenv-token")
        url = archive.add("a.csv", CSV, content_type="text/csv")
        sources = write_sources(
            tmp_path,
            f'[sources.p]\nplugin = "http"\nurls = ["{url}"]\nheaders = {{ Authorization = "Bearer ${{TOKEN_FROM_FILE}}" }}\n',
        )
        (tmp_path / ".env").write_text("TOKEN_FROM_FILE=from-dotenv-token\n")
        env = {k: v for k, v in os.environ.items() if k != "TOKEN_FROM_FILE"}
        result = run_cli(["run", "--sources", str(sources)], env=env)
    assert result.returncode == 0, result.stderr


def test_disabled_sources_are_skipped_and_cannot_be_forced(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        a = archive.add("a.csv", CSV, content_type="text/csv")
        sources = write_sources(
            tmp_path,
            f'[sources.on]\nplugin = "http"\nurls = ["{a}"]\n'
            '[sources.off]\nplugin = "http"\nenabled = false\nurls = ["https://x.org/${UNSET_TOKEN_123}"]\n',
        )
        result = run_cli(["run", "--sources", str(sources)])
        forced = run_cli(["run", "--sources", str(sources), "--only", "off"])
    assert result.returncode == 0, result.stderr
    assert {a["source"] for a in reports(tmp_path / "astroingest-data")[0]["assets"]} == {"on"}
    assert forced.returncode == 2
    assert "--only off: the source is disabled" in forced.stderr
