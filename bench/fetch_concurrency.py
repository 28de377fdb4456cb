"""500 assets of 64 KiB from a local archive adding 50 ms per response, concurrency 32.

Prints astroingest's wall time (the engine in this process, and the whole CLI in a
subprocess), a plain sequential httpx loop's over the same URLs, the ideal
(500 x 50 ms / 32), and the ratios. Targets: <= 1.3x ideal, >= 15x faster than sequential.

    python bench/fetch_concurrency.py [--assets 500] [--latency 0.05] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import archive_process, run_measured

from astroingest._config import load_config
from astroingest._engine import Engine, RunOptions
from astroingest._plugins import load_host
from astroingest._progress import LogProgress
from astroingest._redact import Redactor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        served = root / "served"
        served.mkdir()
        for i in range(args.assets):
            (served / f"a{i:04d}.bin").write_bytes(os.urandom(args.size))
        with archive_process(served, args.latency) as base:
            urls = [f"{base}/a{i:04d}.bin" for i in range(args.assets)]
            toml = (
                f"[defaults]\nconcurrency = {args.concurrency}\n"
                f'[hosts."127.0.0.1"]\nconnections = {args.concurrency}\n'
                f'[sources.bench]\nplugin = "http"\nurls = [{", ".join(repr(u) for u in urls)}]\n'
            ).replace("'", '"')
            engine_s = _engine_run(root / "engine", toml)
            status, cli_s, _ = _cli_run(root / "cli", toml)
            sequential_s = _sequential(urls)

    ideal = args.assets * args.latency / args.concurrency
    print(
        f"assets={args.assets} size={args.size} latency={args.latency * 1000:.0f}ms concurrency={args.concurrency}"
    )
    print(f"ideal                     {ideal:8.3f} s")
    print(
        f"astroingest engine        {engine_s:8.3f} s   {engine_s / ideal:5.2f}x ideal   {sequential_s / engine_s:6.1f}x faster than sequential"
    )
    print(
        f"astroingest CLI (process) {cli_s:8.3f} s   {cli_s / ideal:5.2f}x ideal   {sequential_s / cli_s:6.1f}x faster than sequential   exit {status}"
    )
    print(f"sequential httpx loop     {sequential_s:8.3f} s")


def _write(directory: Path, toml: str) -> Path:
    directory.mkdir()
    path = directory / "sources.toml"
    path.write_text(toml)
    return path


def _engine_run(directory: Path, toml: str) -> float:
    host = load_host(entry_points=False)
    config = load_config(_write(directory, toml), host)
    engine = Engine(config, host, LogProgress(), Redactor())
    start = time.perf_counter()
    report = asyncio.run(engine.run(RunOptions()))
    elapsed = time.perf_counter() - start
    assert report.totals.stored == len(config.sources["bench"].config.urls), report.totals  # type: ignore[attr-defined]
    return elapsed


def _cli_run(directory: Path, toml: str) -> tuple[int, float, int]:
    path = _write(directory, toml)
    return run_measured(
        [sys.executable, "-m", "astroingest", "run", "--sources", str(path), "--no-progress"]
    )


def _sequential(urls: list[str]) -> float:
    start = time.perf_counter()
    with httpx.Client() as client:
        for url in urls:
            client.get(url).raise_for_status()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
