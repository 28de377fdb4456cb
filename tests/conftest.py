"""Shared test helpers. The plugin-author fixtures come from astroingest.testing (pytest11)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[[str], Path]:
    """Write a sources.toml into tmp_path and return its path."""

    def write(text: str, name: str = "sources.toml") -> Path:
        import textwrap

        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user or cron would run it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "astroingest", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
