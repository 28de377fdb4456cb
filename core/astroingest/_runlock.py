"""One run at a time per ledger: a run started while another holds the lock exits at once.

The lock is a file lock (``filelock``) beside the ledger, so it covers every run that
shares that ledger — cron's and a person's. The operating system drops it when the
holder dies, however it dies: a killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from astroingest._exceptions import AstroingestError

EXIT_LOCKED = 75  # EX_TEMPFAIL from sysexits.h: "try again later", which cron users know


class RunLocked(AstroingestError):
    """Another run holds the lock; this one did nothing."""


def lock_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.stem + ".run.lock")


def _holder_path(lock: Path) -> Path:
    # Beside the lock, not in it: the lock file's content belongs to filelock.
    return lock.with_suffix(".holder")


@contextlib.contextmanager
def run_lock(ledger: Path) -> Iterator[Path]:
    """Hold the run lock of ``ledger`` for the block, or raise RunLocked without waiting."""
    path = lock_path(ledger)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(f"another run holds the lock {path}{_holder(path)}; exiting") from None
    holder = _holder_path(path)
    try:
        with contextlib.suppress(OSError):  # only a courtesy for the message above
            started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            holder.write_text(f"pid {os.getpid()} since {started}\n")
        yield path
    finally:
        with contextlib.suppress(OSError):
            holder.unlink(missing_ok=True)
        lock.release()


def _holder(lock: Path) -> str:
    try:
        text = _holder_path(lock).read_text().strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""
