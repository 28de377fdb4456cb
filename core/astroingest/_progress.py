"""Progress on long work: a rich bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from astroingest._report import AssetResult

log = logging.getLogger("astroingest")


class ProgressSink(Protocol):
    def planned(self, count: int = 1) -> None: ...
    def transferred(self, nbytes: int) -> None: ...
    def finished(self, result: AssetResult) -> None: ...
    def close(self) -> None: ...


class LogProgress:
    """One log line per finished asset: what cron mails and CI logs want."""

    def planned(self, count: int = 1) -> None:
        pass

    def transferred(self, nbytes: int) -> None:
        pass

    def finished(self, result: AssetResult) -> None:
        level = logging.WARNING if result.status in ("failed", "quarantined") else logging.INFO
        detail = f": {result.error}" if result.error else ""
        size = f" {result.size} bytes" if result.size is not None else ""
        log.log(
            level, "%s %s/%s%s%s", result.status, result.source, result.key or "-", size, detail
        )

    def close(self) -> None:
        pass


class BarProgress:
    """One bar: assets done of planned, with bytes and the transfer rate beside it."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]assets"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[volume]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task: TaskID = self._progress.add_task("assets", total=0, volume="0 B")
        self._transferred = 0
        self._started = time.monotonic()
        self._progress.start()

    def planned(self, count: int = 1) -> None:
        total = self._progress.tasks[0].total or 0
        self._progress.update(self._task, total=total + count)

    def transferred(self, nbytes: int) -> None:
        self._transferred += nbytes
        rate = self._transferred / max(time.monotonic() - self._started, 1e-3)
        volume = f"{human_bytes(self._transferred)} · {human_bytes(rate)}/s"
        self._progress.update(self._task, volume=volume)

    def finished(self, result: AssetResult) -> None:
        self._progress.advance(self._task)
        if result.status in ("failed", "quarantined"):
            self._progress.console.print(
                f"[red]{result.status}[/] "
                + escape(f"{result.source}/{result.key or '-'}: {result.error or ''}"),
                highlight=False,
            )

    def close(self) -> None:
        self._progress.stop()


def human_bytes(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{int(nbytes)} B" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"
