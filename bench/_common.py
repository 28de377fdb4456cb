"""Shared by the benchmarks: a local archive in its own process, and timing helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def archive_process(directory: Path, latency: float = 0.0) -> Iterator[str]:
    """Serve ``directory`` from a separate process (so it does not share our GIL); yield its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "astroingest._archive_server",
            "--dir",
            str(directory),
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_measured(args: list[str]) -> tuple[int, float, int]:
    """Run a command; return (exit status, wall seconds, peak RSS in bytes) of that child alone."""
    import time

    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if proc.stderr is not None:
        err = proc.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            print(err, file=sys.stderr)
    return os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss * 1024
