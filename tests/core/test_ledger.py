"""The ledger is safe for two processes writing at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from astroingest._ledger import Ledger, LedgerRecord


def record(key: str, run: str = "r1") -> LedgerRecord:
    return LedgerRecord("src", key, f"https://x.org/{key}", '"e"', None, 3, "ab" * 32, "t", run)


def test_put_get_replace(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.get_sync("src", "a") is None
    ledger.put_sync(record("a"))
    ledger.put_sync(record("a", run="r2"))
    got = ledger.get_sync("src", "a")
    assert got is not None and got.run_id == "r2"
    assert len(ledger.records()) == 1
    ledger.close()


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from astroingest._ledger import Ledger, LedgerRecord\n"
        "ledger = Ledger(Path(sys.argv[1]))\n"
        "for i in range(300):\n"
        "    ledger.put_sync(LedgerRecord('src', f'{sys.argv[2]}-{i}', 'u', None, None, 1, 'x', 't', 'r'))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in ("p", "q")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert len(Ledger(path).records("src")) == 600


def test_merge_takes_newer_records_and_keeps_newer_own(tmp_path: Path) -> None:
    from dataclasses import replace

    from astroingest._ledger import BackupRecord

    ours, theirs = Ledger(tmp_path / "ours.sqlite"), Ledger(tmp_path / "theirs.sqlite")
    ours.put_sync(replace(record("a"), stored_at="2026-01-02", sha256="ours-a"))
    ours.put_sync(replace(record("b"), stored_at="2026-01-01", sha256="ours-b"))
    theirs.put_sync(replace(record("a"), stored_at="2026-01-01", sha256="theirs-a"))  # older
    theirs.put_sync(replace(record("b"), stored_at="2026-01-03", sha256="theirs-b"))  # newer
    theirs.put_sync(replace(record("c"), stored_at="2026-01-01", sha256="theirs-c"))  # new
    copy = BackupRecord("src", "c", "s3://backup", "theirs-c", 1, "raw/src/c", None, "2026-01-04")
    theirs.backup_put(copy)
    ours.source_succeeded("src", "2026-01-05T00:00:00Z", "r-ours")
    theirs.source_succeeded("src", "2026-01-06T00:00:00Z", "r-theirs")
    theirs.close()
    assert ours.merge_from(tmp_path / "theirs.sqlite") == 4
    assert {r.key: r.sha256 for r in ours.records()} == {
        "a": "ours-a",
        "b": "theirs-b",
        "c": "theirs-c",
    }
    assert ours.backups("s3://backup") == [copy]
    assert ours.last_successes() == {"src": "2026-01-06T00:00:00Z"}
    ours.close()
