"""2,000 assets of 64 KiB, 50 ms server latency: the local executor against a 2-worker LocalCluster.

Both runs keep the same number of transfers in flight (``--concurrency``, 32: the local
engine's slots; 2 worker processes x 16 task threads on the cluster) and the same host
budget. Prints each wall time, the ideal (assets x latency / concurrency), the Dask run
as a ratio of the local one, and the Dask path's overhead per asset
((dask - local) / assets). The cluster is started and warmed up (each worker builds its
engine on a first small run) before the timed run: what is measured is the per-asset path
(task submit, leases from the scheduler, result back, ledger write on the client).

    python bench/dask_scaling.py [--assets 2000] [--latency 0.05] [--concurrency 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import archive_process
from distributed import LocalCluster

from astroingest._config import load_config
from astroingest._engine import Engine, Executor, RunOptions
from astroingest._executors.client import DaskExecutor
from astroingest._plugins import load_host
from astroingest._progress import LogProgress
from astroingest._redact import Redactor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        served = root / "served"
        served.mkdir()
        for i in range(args.assets):
            (served / f"a{i:05d}.bin").write_bytes(os.urandom(args.size))
        with archive_process(served, args.latency) as base:
            urls = [f"{base}/a{i:05d}.bin" for i in range(args.assets)]
            local_s = _timed(root / "local", _toml(urls, args.concurrency), None)
            with LocalCluster(
                n_workers=args.workers,
                threads_per_worker=-(-args.concurrency // args.workers),
                processes=True,
                dashboard_address=None,
            ) as cluster:
                executor = DaskExecutor(cluster.scheduler_address, entry_points=False)
                _timed(root / "warm-up", _toml(urls[:50], args.concurrency), executor)
                dask_s = _timed(root / "dask", _toml(urls, args.concurrency), executor)

    ideal = args.assets * args.latency / args.concurrency
    overhead_ms = (dask_s - local_s) / args.assets * 1000
    print(
        f"assets={args.assets} size={args.size} latency={args.latency * 1000:.0f}ms "
        f"concurrency={args.concurrency} workers={args.workers} cores={os.cpu_count()}"
    )
    print(f"ideal                      {ideal:8.3f} s")
    print(f"local executor (baseline)  {local_s:8.3f} s   {local_s / ideal:5.2f}x ideal")
    print(
        f"dask executor              {dask_s:8.3f} s   {dask_s / ideal:5.2f}x ideal   "
        f"{dask_s / local_s:5.2f}x local"
    )
    print(f"dask overhead per asset    {overhead_ms:8.2f} ms  ((dask - local) / assets)")


def _toml(urls: list[str], concurrency: int) -> str:
    listed = ", ".join(f'"{u}"' for u in urls)
    return (
        f"[defaults]\nconcurrency = {concurrency}\n"
        f'[hosts."127.0.0.1"]\nconnections = {concurrency}\n'
        f'[sources.bench]\nplugin = "http"\nurls = [{listed}]\n'
    )


def _timed(directory: Path, toml: str, executor: Executor | None) -> float:
    directory.mkdir()
    path = directory / "sources.toml"
    path.write_text(toml)
    host = load_host(entry_points=False)
    config = load_config(path, host)
    engine = Engine(config, host, LogProgress(), Redactor(), executor)
    start = time.perf_counter()
    report = asyncio.run(engine.run(RunOptions()))
    elapsed = time.perf_counter() - start
    planned = len(config.sources["bench"].config.urls)  # type: ignore[attr-defined]
    assert report.totals.stored == planned, report.totals
    return elapsed


if __name__ == "__main__":
    main()
