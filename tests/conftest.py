"""Shared test helpers. The plugin-author fixtures come from astroingest.testing (pytest11)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.s3server import CREDENTIALS, MotoServer

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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """One moto S3 server for the session, on a free loopback port."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The session's S3 server, emptied, with test credentials and endpoint in the environment."""
    if s3_server.process is None or s3_server.process.poll() is not None:
        s3_server.start()  # a test stopped it on purpose
    s3_server.reset()
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return s3_server
