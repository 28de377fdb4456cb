"""``plugin = "http"``: URL lists and JSON indexes, end to end through the real engine."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from astroingest._archive_server import ArchiveServer
from astroingest._report import RunReport
from astroingest_plugins.http import key_from_url

Run = Callable[..., RunReport]

CSV_A = b"ra,dec\n1.0,2.0\n"
CSV_B = b"ra,dec\n3.0,4.0\n5.0,6.0\n"
CSV_C = b"id,mag\n7,12.5\n"
FAST = """
[defaults]
retries = 1
backoff = 0.01
max_backoff = 0.02
read_timeout = 5
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw(tmp_path: Path, source: str) -> Path:
    return tmp_path / "astroingest-data" / "raw" / source


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".astroingest-pending" not in p.parts
    }


def index_source(index_url: str, name: str = "mirror") -> str:
    return f'{FAST}\n[sources.{name}]\nplugin = "http"\nindex = "{index_url}"\n'


def urls_source(urls: list[str], name: str = "mirror") -> str:
    return f'{FAST}\n[sources.{name}]\nplugin = "http"\nurls = {json.dumps(urls)}\n'


# -- key_from_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://archive.org/data/2024/image.fits", "image.fits"),
        ("https://archive.org/image.fits", "image.fits"),
        ("https://archive.org/data/release/", "release"),
        ("https://archive.org/data/release//", "release"),
        ("https://archive.org/data/my%20table.csv", "my table.csv"),
        ("https://archive.org/data/%C3%A9toile.txt", "étoile.txt"),
        ("https://archive.org/data/file.csv?version=2&token=x#top", "file.csv"),
        ("https://archive.org", "archive.org"),
        ("https://archive.org/", "archive.org"),
        ("https://Archive.Example.ORG:8443/", "archive.example.org"),
        ("https://archive.org/?q=1", "archive.org"),
    ],
)
def test_key_from_url(url: str, key: str) -> None:
    assert key_from_url(url) == key


# -- urls -----------------------------------------------------------------------------------


def test_duplicate_basenames_get_distinct_keys_that_are_stable_across_runs(
    local_archive: ArchiveServer, astroingest_run: Run, tmp_path: Path
) -> None:
    bodies = {"2023/x.csv": CSV_A, "2024/x.csv": CSV_B, "2025/x.csv": CSV_C}
    urls = [local_archive.add(path, body, content_type="text/csv") for path, body in bodies.items()]
    readmes = [
        local_archive.add(f"{year}/README", f"notes {year}\n".encode(), content_type="text/plain")
        for year in (2023, 2024)
    ]
    toml = urls_source(urls + readmes)

    first = astroingest_run(toml)
    second = astroingest_run(toml)

    assert first.status == "ok" and second.status == "ok"
    keys = {a.url: str(a.key) for a in first.assets}
    assert {a.url: str(a.key) for a in second.assets} == keys  # same URL, same key, run after run
    assert {a.status for a in first.assets} == {"stored"}
    assert {a.status for a in second.assets} == {"unchanged"}

    # every URL sharing a name gets a suffix of its own: no entry owns the bare name
    csv_keys = [keys[u] for u in urls]
    assert len(set(csv_keys)) == 3
    assert all(re.fullmatch(r"x-[0-9a-f]{10}\.csv", k) for k in csv_keys), csv_keys
    readme_keys = [keys[u] for u in readmes]
    assert all(re.fullmatch(r"README-[0-9a-f]{10}", k) for k in readme_keys), readme_keys

    on_disk = files_under(raw(tmp_path, "mirror"))
    assert {on_disk[keys[u]] for u in urls} == set(bodies.values())
    assert on_disk[readme_keys[1]] == b"notes 2024\n"


def test_duplicate_basename_keys_do_not_depend_on_index_order(
    local_archive: ArchiveServer, astroingest_run: Run, tmp_path: Path
) -> None:
    # An archive's index need not list files in the same order every time; a key must
    # keep naming the same URL's bytes, or x.csv silently changes content between runs.
    a = local_archive.add("2023/x.csv", CSV_A, content_type="text/csv")
    b = local_archive.add("2024/x.csv", CSV_B, content_type="text/csv")
    local_archive.add_json("index.json", [a, b])
    first = astroingest_run(index_source(local_archive.url("index.json")))
    local_archive.add_json("index.json", [b, a])
    second = astroingest_run(index_source(local_archive.url("index.json")))

    assert {x.url: x.key for x in second.assets} == {x.url: x.key for x in first.assets}
    assert {x.status for x in second.assets} == {"unchanged"}


# -- index ----------------------------------------------------------------------------------


def test_index_urls_are_resolved_against_the_index_url(
    local_archive: ArchiveServer, astroingest_run: Run, tmp_path: Path
) -> None:
    local_archive.add("cat/v1/a.csv", CSV_A, content_type="text/csv")
    local_archive.add("cat/shared/b.csv", CSV_B, content_type="text/csv")
    local_archive.add("top/c.csv", CSV_C, content_type="text/csv")
    index = local_archive.add_json(
        "cat/v1/index.json",
        [
            "a.csv",  # a bare string entry, relative
            {"url": "../shared/b.csv", "sha256": sha(CSV_B), "size": len(CSV_B)},
            {"url": "/top/c.csv", "comment": "extra fields other tools write are ignored"},
        ],
    )

    report = astroingest_run(index_source(index))

    assert report.status == "ok", [a.error for a in report.assets]
    assert {a.key: a.url for a in report.assets} == {
        "a.csv": local_archive.url("cat/v1/a.csv"),
        "b.csv": local_archive.url("cat/shared/b.csv"),
        "c.csv": local_archive.url("top/c.csv"),
    }
    assert files_under(raw(tmp_path, "mirror")) == {"a.csv": CSV_A, "b.csv": CSV_B, "c.csv": CSV_C}
    for path in ("cat/v1/a.csv", "cat/shared/b.csv", "top/c.csv"):
        assert local_archive.count(path) == 1


def test_index_of_plain_absolute_url_strings(
    local_archive: ArchiveServer, astroingest_run: Run, tmp_path: Path
) -> None:
    urls = [
        local_archive.add("d/a.csv", CSV_A, content_type="text/csv"),
        local_archive.add("d/b.csv", CSV_B, content_type="text/csv"),
    ]
    index = local_archive.add_json("index.json", urls)

    report = astroingest_run(index_source(index))

    assert report.status == "ok"
    assert sorted((a.key, a.status) for a in report.assets) == [
        ("a.csv", "stored"),
        ("b.csv", "stored"),
    ]
    assert files_under(raw(tmp_path, "mirror")) == {"a.csv": CSV_A, "b.csv": CSV_B}


@pytest.mark.parametrize(
    "document",
    [{"files": ["a.csv"]}, "a.csv", 42, None],
    ids=["object", "string", "number", "null"],
)
def test_index_that_is_not_a_list_fails_the_source(
    local_archive: ArchiveServer, astroingest_run: Run, tmp_path: Path, document: object
) -> None:
    local_archive.add("a.csv", CSV_A, content_type="text/csv")
    index = local_archive.add_json("index.json", document)

    report = astroingest_run(index_source(index))

    assert report.status == "failed"
    assert report.totals.failed == 1 and report.totals.stored == 0
    [failure] = report.assets
    assert (failure.source, failure.key, failure.status) == ("mirror", None, "failed")
    assert failure.error == f"planning failed: index {index} is not a JSON list"
    assert local_archive.count("a.csv") == 0
    assert not raw(tmp_path, "mirror").exists()


def test_failing_index_does_not_stop_other_sources(
    local_archive: ArchiveServer, astroingest_run: Run, tmp_path: Path
) -> None:
    good = local_archive.add("a.csv", CSV_A, content_type="text/csv")
    bad = local_archive.add_json("bad.json", {"not": "a list"})
    report = astroingest_run(index_source(bad, "broken") + urls_source([good], "fine")[len(FAST) :])
    assert report.status == "failed"
    assert {(a.source, a.status) for a in report.assets} == {
        ("broken", "failed"),
        ("fine", "stored"),
    }


@pytest.mark.parametrize(
    "sha256",
    ["not-a-checksum", "ab" * 31, "zz" * 32, "ab" * 33],
    ids=["text", "short", "not-hex", "long"],
)
def test_index_entry_with_a_malformed_sha256_fails_the_source_clearly(
    local_archive: ArchiveServer, astroingest_run: Run, sha256: str
) -> None:
    local_archive.add("a.csv", CSV_A, content_type="text/csv")
    local_archive.add("b.csv", CSV_B, content_type="text/csv")
    index = local_archive.add_json(
        "index.json", [{"url": "a.csv", "sha256": sha(CSV_A)}, {"url": "b.csv", "sha256": sha256}]
    )

    report = astroingest_run(index_source(index))

    [failure] = report.assets
    assert failure.status == "failed" and failure.key is None
    assert failure.error is not None
    assert failure.error.startswith(
        "planning failed: index entries must be {url, sha256?, size?}: "
    )
    assert "1.sha256" in failure.error  # which entry, which field
    assert "\n" not in failure.error
    assert local_archive.count("a.csv") == local_archive.count("b.csv") == 0


def test_index_entry_whose_sha256_does_not_match_fails_that_asset(
    local_archive: ArchiveServer, astroingest_run: Run, tmp_path: Path
) -> None:
    local_archive.add("a.csv", CSV_A, content_type="text/csv")
    local_archive.add("b.csv", CSV_B, content_type="text/csv")
    wrong = sha(b"something else")
    index = local_archive.add_json(
        "index.json",
        [{"url": "a.csv", "sha256": wrong.upper()}, {"url": "b.csv", "sha256": sha(CSV_B)}],
    )

    report = astroingest_run(index_source(index))

    by_key = {a.key: a for a in report.assets}
    assert by_key["b.csv"].status == "stored"
    failed = by_key["a.csv"]
    assert failed.status == "failed"
    assert failed.error == f"sha256 mismatch: got {sha(CSV_A)}, expected {wrong}"
    assert failed.attempts == 2  # retries = 1: a corrupted transfer gets another try
    assert files_under(raw(tmp_path, "mirror")) == {"b.csv": CSV_B}  # never the bad bytes


@pytest.mark.parametrize(
    "key",
    ["../../etc/passwd", "/etc/passwd", "..\\..\\etc\\passwd", "./../etc/./passwd"],
)
def test_index_key_cannot_escape_the_source_prefix(
    local_archive: ArchiveServer, astroingest_run: Run, tmp_path: Path, key: str
) -> None:
    local_archive.add("a.csv", CSV_A, content_type="text/csv")
    index = local_archive.add_json("index.json", [{"url": "a.csv", "key": key}])

    report = astroingest_run(index_source(index))

    assert report.status == "ok", [a.error for a in report.assets]
    [asset] = report.assets
    assert asset.key == "etc/passwd"
    landed = raw(tmp_path, "mirror") / "etc" / "passwd"
    assert landed.read_bytes() == CSV_A
    everywhere = [p for p in tmp_path.rglob("passwd") if p.is_file()]
    assert everywhere == [landed]


# -- a remote archive, mocked with pytest-httpx ---------------------------------------------


def test_index_from_a_remote_archive(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    # The engine's ShardedTransport delegates to httpx.AsyncHTTPTransport, which
    # pytest-httpx patches, so the real client reaches these mocks.
    index = "https://archive.example.org/release/index.json"
    httpx_mock.add_response(
        url=index,
        json=[
            {"url": "tables/a.csv", "sha256": sha(CSV_A), "size": len(CSV_A)},
            "https://mirror.example.net/b.csv",
            {"url": "/other/c.csv", "key": "renamed/c.csv"},
        ],
    )
    for url, body in [
        ("https://archive.example.org/release/tables/a.csv", CSV_A),
        ("https://mirror.example.net/b.csv", CSV_B),
        ("https://archive.example.org/other/c.csv", CSV_C),
    ]:
        httpx_mock.add_response(url=url, content=body, headers={"Content-Type": "text/csv"})

    report = astroingest_run(index_source(index))

    assert report.status == "ok", [a.error for a in report.assets]
    assert files_under(raw(tmp_path, "mirror")) == {
        "a.csv": CSV_A,
        "b.csv": CSV_B,
        "renamed/c.csv": CSV_C,
    }
    requests = httpx_mock.get_requests()
    assert len(requests) == 4
    assert all(r.headers["User-Agent"].startswith("astroingest/") for r in requests)


def test_remote_index_headers_are_sent_with_index_and_assets(
    httpx_mock: HTTPXMock, astroingest_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHIVE_TOKEN", "s3cr3t-t0ken")
    index = "https://archive.example.org/index.json"
    httpx_mock.add_response(url=index, json=["a.csv"])
    httpx_mock.add_response(
        url="https://archive.example.org/a.csv", content=CSV_A, headers={"Content-Type": "text/csv"}
    )
    report = astroingest_run(
        index_source(index) + 'headers = { Authorization = "Bearer ${ARCHIVE_TOKEN}" }\n'
    )
    assert report.status == "ok"
    assert [r.headers.get("Authorization") for r in httpx_mock.get_requests()] == [
        "Bearer s3cr3t-t0ken"
    ] * 2
    assert "s3cr3t-t0ken" not in report.to_json()


def test_a_changed_published_checksum_is_not_answered_by_a_304(
    local_archive: ArchiveServer, astroingest_run: Run
) -> None:
    local_archive.add("a.csv", CSV_A, content_type="text/csv")
    good = hashlib.sha256(CSV_A).hexdigest()
    local_archive.add_json("index.json", [{"url": "a.csv", "sha256": good}])
    toml = f'[defaults]\nbackoff = 0.01\nretries = 0\n[sources.m]\nplugin = "http"\nindex = "{local_archive.url("index.json")}"\n'
    assert astroingest_run(toml).totals.stored == 1
    local_archive.add_json("index.json", [{"url": "a.csv", "sha256": "0" * 64}])
    [asset] = astroingest_run(toml).assets
    assert asset.status == "failed"  # not "unchanged": the archive now says something else
    assert "sha256 mismatch" in (asset.error or "")


def test_headers_go_only_to_the_index_origin(astroingest_run: Run) -> None:
    with ArchiveServer() as home, ArchiveServer() as elsewhere:
        local = home.add("a.csv", CSV_A, content_type="text/csv")
        remote = elsewhere.add("b.csv", CSV_B, content_type="text/csv")
        index = home.add_json("index.json", [local, remote])
        report = astroingest_run(
            f'[sources.m]\nplugin = "http"\nindex = "{index}"\nheaders = {{ Authorization = "Bearer s3cr3t-idx" }}\n'
        )
        assert report.status == "ok"
        assert home.requests("a.csv")[0].headers["authorization"] == "Bearer s3cr3t-idx"
        assert "authorization" not in elsewhere.requests("b.csv")[0].headers
