"""The real ``astroingest`` command in subprocesses: usage, check, plugins, progress output."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from astroingest import __version__
from astroingest._archive_server import ArchiveServer
from astroingest._plugins import BUILTIN_PLUGINS
from tests.conftest import run_cli
from tests.e2e.conftest import reports, stored

CSV = {
    "a.csv": b"ra,dec\n1.0,2.0\n",
    "b.csv": b"ra,dec\n3.0,4.0\n5.0,6.0\n",
    "c.csv": b"id,mag\n7,12.5\n",
}

pytestmark = pytest.mark.slow


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("astroingest: error: "), lines[0]
    return lines[0]


# -- usage ------------------------------------------------------------------------------------


def test_version() -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"astroingest {__version__}\n"


def test_no_command_is_a_usage_error() -> None:
    result = run_cli([])
    assert result.returncode == 2
    assert "command" in one_error_line(result)
    assert result.stdout == ""


def test_run_without_sources_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(["run"], cwd=tmp_path)
    assert result.returncode == 2
    assert "--sources" in one_error_line(result)
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


# -- check ------------------------------------------------------------------------------------


def test_check_prints_each_source_and_ok(tmp_path: Path) -> None:
    sources = tmp_path / "sources.toml"
    sources.write_text(
        """
[sources.mirror]
plugin = "http"
urls = ["https://archive.example.org/a.fits"]

[sources.lab]
plugin = "files"
paths = ["data/**/*.nc"]
enabled = false
"""
    )
    result = run_cli(["check", "--sources", str(sources)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "mirror: http",
        "lab: files (disabled)",
        f"{sources}: OK, 2 sources",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["sources.toml"]  # offline, nothing written


def test_check_of_a_bad_file_is_one_line(tmp_path: Path) -> None:
    sources = tmp_path / "sources.toml"
    sources.write_text('[sources.mirror]\nplugin = "http"\nurls = ["ftp://nope/a"]\n')
    result = run_cli(["check", "--sources", str(sources)])
    assert result.returncode == 2
    assert "sources.toml" in one_error_line(result)
    assert result.stdout == ""


# -- plugins ----------------------------------------------------------------------------------


def test_plugins_table_lists_the_builtin_source_types() -> None:
    result = run_cli(["plugins"])
    assert result.returncode == 0, result.stderr
    assert "source types" in result.stdout
    assert re.search(r"\bhttp\b", result.stdout), result.stdout
    assert re.search(r"\bfiles\b", result.stdout), result.stdout
    for hook in ("stores", "validators", "source_types", "host_limits"):
        assert hook in result.stdout


def test_plugins_json_lists_builtins_with_their_hooks() -> None:
    result = run_cli(["plugins", "--json"])
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["broken"] == []
    by_name = {p["name"]: p for p in document["plugins"]}
    assert set(BUILTIN_PLUGINS) <= set(by_name)
    expected = {
        "astroingest.stores.local": ([], ["astroingest_stores"]),
        "astroingest.validation.builtin": ([], ["astroingest_validators"]),
        "astroingest_plugins.http": (["http"], ["astroingest_source_types"]),
        "astroingest_plugins.files": (["files"], ["astroingest_source_types"]),
        "astroingest_plugins.hosts": ([], ["astroingest_host_limits"]),
    }
    for name, (source_types, hooks) in expected.items():
        plugin = by_name[name]
        assert (plugin["source_types"], plugin["hooks"]) == (source_types, hooks), name
        assert plugin["builtin"] is True
        assert (plugin["distribution"], plugin["version"]) == ("astroingest", __version__)


# -- progress: a bar on a terminal, log lines otherwise ---------------------------------------

_ANSI = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>()][0-9A-Za-z]?"
)


def run_in_terminal(args: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """The real CLI with stdin, stdout and stderr on a pseudo-terminal 100 columns wide."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in _TERMINAL_OVERRIDES}
    env.update(TERM="xterm", COLUMNS="100", LINES="40")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "astroingest", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([master], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no exit within {timeout} s; so far: {output[-2000:]!r}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not data:
                break
            output += data
        returncode = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return returncode, output.decode("utf-8", "replace")


_TERMINAL_OVERRIDES = {"FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CI"}


def write_mirror(tmp_path: Path, archive: ArchiveServer) -> Path:
    urls = [archive.add(name, body, content_type="text/csv") for name, body in CSV.items()]
    sources = tmp_path / "sources.toml"
    sources.write_text(f'[sources.mirror]\nplugin = "http"\nurls = {json.dumps(urls)}\n')
    return sources


def test_run_on_a_terminal_shows_a_progress_bar_and_the_summary(tmp_path: Path) -> None:
    with ArchiveServer(latency=0.05) as archive:
        sources = write_mirror(tmp_path, archive)
        returncode, output = run_in_terminal(["run", "--sources", str(sources)], cwd=tmp_path)

    text = _ANSI.sub("", output).replace("\r", "\n")
    assert returncode == 0, text
    assert "assets" in text  # the bar's label
    assert "3/3" in text  # assets done of planned
    [report] = reports(tmp_path / "astroingest-data")
    assert f"run {report['run_id']}: ok" in text  # the summary table's title
    assert re.search(r"source\s*┃\s*stored\s*┃\s*unchanged\s*┃\s*quarantined\s*┃\s*failed", text), (
        text
    )
    assert re.search(r"mirror\s*│\s*3\s*│\s*0\s*│", text), text
    assert "report: " in text
    assert "stored mirror/" not in text  # the bar replaces the per-asset log lines
    assert stored(tmp_path / "astroingest-data", "mirror") == CSV


def test_run_without_a_terminal_logs_a_line_per_asset(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        sources = write_mirror(tmp_path, archive)
        result = run_cli(["run", "--sources", str(sources)], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    for name, body in CSV.items():
        assert f"stored mirror/{name} {len(body)} bytes" in result.stderr
    assert "\x1b[" not in result.stderr + result.stdout  # no terminal control codes
    assert "report: " in result.stdout
