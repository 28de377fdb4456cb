"""``plugin = "files"``: local paths and globs through the real engine, store and ledger."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from astroingest import hookimpl
from astroingest._report import RunReport
from astroingest.validation import Check, QualityReport, ValidatorType, report
from astroingest_plugins.files import _static_prefix, file_etag

Run = Callable[..., RunReport]

CSV_A = b"ra,dec\n1.0,2.0\n"
CSV_B = b"ra,dec\n3.0,4.0\n5.0,6.0\n"
CSV_C = b"id,mag\n7,12.5\n"
FAST = """
[defaults]
retries = 2
backoff = 0.01
max_backoff = 0.02
"""


def files_source(*paths: str, name: str = "lab") -> str:
    quoted = ", ".join(f'"{p}"' for p in paths)
    return f'{FAST}\n[sources.{name}]\nplugin = "files"\npaths = [{quoted}]\n'


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def raw(tmp_path: Path, source: str = "lab") -> Path:
    return tmp_path / "astroingest-data" / "raw" / source


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".astroingest-pending" not in p.parts
    }


def ledger(tmp_path: Path) -> dict[str, tuple[str, str, str]]:
    """key -> (etag, sha256, stored_at) for source lab."""
    path = tmp_path / "astroingest-data" / "logs" / "ledger.sqlite"
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT key, etag, sha256, stored_at FROM assets WHERE source = 'lab'"
        ).fetchall()
    return {key: (etag, digest, stored_at) for key, etag, digest, stored_at in rows}


# -- _static_prefix -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("/data/obs/*.nc", "/data/obs"),
        ("/data/obs/**/*.nc", "/data/obs"),
        ("/data/**", "/data"),
        ("/data/run?/a.nc", "/data"),
        ("/data/run[12]/a.nc", "/data"),
        ("/data/obs/a[0-9].nc", "/data/obs"),
        ("/*.nc", "/"),
        ("/data/obs/a.nc", "/data/obs/a.nc"),  # no magic: the path itself
        ("/data/obs", "/data/obs"),
        ("data/2024/*/x.csv", "data/2024"),
    ],
)
def test_static_prefix(pattern: str, prefix: str) -> None:
    assert _static_prefix(pattern) == Path(prefix)


# -- planning keys --------------------------------------------------------------------------


def test_recursive_glob_keys_are_relative_to_the_static_prefix(
    astroingest_run: Run, tmp_path: Path
) -> None:
    write(tmp_path / "data" / "a.csv", CSV_A)
    write(tmp_path / "data" / "2024" / "b.csv", CSV_B)
    write(tmp_path / "data" / "2024" / "deep" / "c.csv", CSV_C)
    write(tmp_path / "data" / "2024" / "notes.txt", b"not matched\n")

    result = astroingest_run(files_source("data/**/*.csv"))

    assert result.status == "ok", [a.error for a in result.assets]
    assert sorted((a.key, a.status) for a in result.assets) == [
        ("2024/b.csv", "stored"),
        ("2024/deep/c.csv", "stored"),
        ("a.csv", "stored"),
    ]
    assert files_under(raw(tmp_path)) == {
        "a.csv": CSV_A,
        "2024/b.csv": CSV_B,
        "2024/deep/c.csv": CSV_C,
    }
    by_key = {a.key: a for a in result.assets}
    assert by_key["2024/deep/c.csv"].url == (tmp_path / "data/2024/deep/c.csv").as_uri()


def test_a_plain_file_path_gets_its_basename_as_key(astroingest_run: Run, tmp_path: Path) -> None:
    write(tmp_path / "data" / "2024" / "b.csv", CSV_B)

    result = astroingest_run(files_source("data/2024/b.csv"))

    assert [(a.key, a.status) for a in result.assets] == [("b.csv", "stored")]
    assert files_under(raw(tmp_path)) == {"b.csv": CSV_B}


def test_absolute_patterns_stay_absolute(
    astroingest_run: Run, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("instrument")  # not under the config's directory
    write(elsewhere / "night1" / "a.csv", CSV_A)
    write(elsewhere / "night2" / "b.csv", CSV_B)
    write(elsewhere / "single.csv", CSV_C)

    result = astroingest_run(files_source(f"{elsewhere}/night*/*.csv", f"{elsewhere}/single.csv"))

    assert result.status == "ok", [a.error for a in result.assets]
    assert files_under(raw(tmp_path)) == {
        "night1/a.csv": CSV_A,
        "night2/b.csv": CSV_B,
        "single.csv": CSV_C,
    }


def test_names_that_need_quoting_in_a_file_url(astroingest_run: Run, tmp_path: Path) -> None:
    # The opener reads the path back out of the asset's file:// URL.
    write(tmp_path / "data" / "run 1" / "50% #2?.csv", CSV_A)

    result = astroingest_run(files_source("data/*/*.csv"))

    assert result.status == "ok", [a.error for a in result.assets]
    [asset] = result.assets
    assert asset.key is not None
    assert list(files_under(raw(tmp_path)).values()) == [CSV_A]
    assert (raw(tmp_path) / asset.key).read_bytes() == CSV_A


def test_no_match_is_a_warning_not_a_failure(
    astroingest_run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "a.txt", b"not a csv\n")

    with caplog.at_level(logging.WARNING, logger="astroingest"):
        result = astroingest_run(files_source("data/*.csv", "missing/**/*.nc"))

    assert result.status == "ok"
    assert result.assets == []
    assert (result.totals.stored, result.totals.failed) == (0, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "no files match data/*.csv" in warnings
    assert "no files match missing/**/*.nc" in warnings
    assert not raw(tmp_path).exists()


# -- reruns ---------------------------------------------------------------------------------


def test_unchanged_file_is_not_read_again_on_rerun(astroingest_run: Run, tmp_path: Path) -> None:
    a = write(tmp_path / "data" / "a.csv", CSV_A)
    write(tmp_path / "data" / "b.csv", CSV_B)
    toml = files_source("data/*.csv")

    first = astroingest_run(toml)
    before = ledger(tmp_path)
    second = astroingest_run(toml)
    after = ledger(tmp_path)

    assert {x.status for x in first.assets} == {"stored"}
    assert {x.status for x in second.assets} == {"unchanged"}
    assert before["a.csv"][0] == file_etag(a.stat())
    # The not-modified path leaves the ledger alone; a re-read that found the same bytes
    # would have rewritten the record (stored_at).
    assert after == before
    assert files_under(raw(tmp_path)) == {"a.csv": CSV_A, "b.csv": CSV_B}


def test_file_modified_between_runs_is_stored_again(astroingest_run: Run, tmp_path: Path) -> None:
    a = write(tmp_path / "data" / "a.csv", CSV_A)
    write(tmp_path / "data" / "b.csv", CSV_B)
    toml = files_source("data/*.csv")
    astroingest_run(toml)

    a.write_bytes(CSV_C)
    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = astroingest_run(toml)

    assert {x.key: x.status for x in second.assets} == {"a.csv": "stored", "b.csv": "unchanged"}
    assert files_under(raw(tmp_path)) == {"a.csv": CSV_C, "b.csv": CSV_B}
    assert ledger(tmp_path)["a.csv"][0] == file_etag(a.stat())


def test_touched_but_identical_file_is_unchanged(astroingest_run: Run, tmp_path: Path) -> None:
    a = write(tmp_path / "data" / "a.csv", CSV_A)
    toml = files_source("data/*.csv")
    astroingest_run(toml)

    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = astroingest_run(toml)

    assert [(x.key, x.status) for x in second.assets] == [("a.csv", "unchanged")]
    assert ledger(tmp_path)["a.csv"][0] == file_etag(a.stat())  # the new etag is remembered


# -- a file still being written ----------------------------------------------------------


class _GrowOnFirstRead:
    """A validator for ``.grow`` files that appends to the file after its first chunk, once.

    Validators are fed each chunk before the opener reads the next, so this is a file
    being appended to by another process while we read it, at a known moment.
    """

    def __init__(self, path: Path, extra: bytes) -> None:
        self.path = path
        self.extra = extra
        self.grown = False

    @hookimpl
    def astroingest_validators(self) -> list[ValidatorType]:
        return [ValidatorType("grow", self._validator, extensions=(".grow",))]

    def _validator(self) -> _Feed:
        return _Feed(self)


class _Feed:
    def __init__(self, plugin: _GrowOnFirstRead) -> None:
        self.plugin = plugin

    def feed(self, chunk: bytes) -> None:
        if not self.plugin.grown:
            self.plugin.grown = True
            with self.plugin.path.open("ab") as f:
                f.write(self.plugin.extra)

    def finish(self) -> QualityReport:
        return report("grow", [Check("fed", True)])


def test_file_that_grows_while_read_is_retried(
    astroingest_run: Run, register_plugin: Callable[..., str], tmp_path: Path
) -> None:
    path = write(tmp_path / "data" / "frames.grow", b"frame 1\n")
    register_plugin(_GrowOnFirstRead(path, b"frame 2\n"), "grow-on-read")

    result = astroingest_run(files_source("data/*.grow"))

    [asset] = result.assets
    assert (asset.status, asset.attempts) == ("stored", 2), asset.error
    assert asset.size == len(b"frame 1\nframe 2\n")
    assert files_under(raw(tmp_path)) == {"frames.grow": b"frame 1\nframe 2\n"}


def test_a_glob_over_the_data_directory_never_ingests_the_store(
    tmp_path: Path, astroingest_run: Callable[..., RunReport]
) -> None:
    write(tmp_path / "t.csv", b"a,b\n1,2\n")
    toml = '[sources.lab]\nplugin = "files"\npaths = ["**/*.csv"]\n'
    for _ in range(3):
        report = astroingest_run(toml)
        assert report.status == "ok"
    assert files_under(raw(tmp_path)) == {"t.csv": b"a,b\n1,2\n"}
