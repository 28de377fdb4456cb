"""Peak RSS of `astroingest run` fetching one 64 MiB asset, then one 1 GiB asset, into the local store.

Memory must stay flat as assets grow: the target is the two within 10% of each other and
both under 150 MiB. The baseline beside them is the same CLI process doing nothing but
`astroingest check` (interpreter + imports), so the streaming cost can be read off.

    python bench/stream_memory.py [--small-mib 64] [--large-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import archive_process, run_measured

MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small-mib", type=int, default=64)
    parser.add_argument("--large-mib", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        served = root / "served"
        served.mkdir()
        digests = {
            "small.bin": _make(served / "small.bin", args.small_mib),
            "large.bin": _make(served / "large.bin", args.large_mib),
        }
        with archive_process(served) as base:
            results = {}
            for name in ("small.bin", "large.bin"):
                sources = root / name / "sources.toml"
                sources.parent.mkdir()
                sources.write_text(f'[sources.m]\nplugin = "http"\nurls = ["{base}/{name}"]\n')
                if name == "small.bin":
                    _, _, baseline = run_measured(
                        [sys.executable, "-m", "astroingest", "check", "--sources", str(sources)]
                    )
                status, wall, rss = run_measured(
                    [
                        sys.executable,
                        "-m",
                        "astroingest",
                        "run",
                        "--sources",
                        str(sources),
                        "--no-progress",
                    ]
                )
                landed = root / name / "astroingest-data" / "raw" / "m" / name
                assert status == 0 and _sha256(landed) == digests[name], (
                    f"{name}: run failed or wrong bytes"
                )
                results[name] = (wall, rss)
    (small_wall, small_rss), (large_wall, large_rss) = results["small.bin"], results["large.bin"]
    print(f"baseline (astroingest check)   peak RSS {baseline / MIB:7.1f} MiB")
    print(
        f"{args.small_mib:5d} MiB asset                peak RSS {small_rss / MIB:7.1f} MiB   {small_wall:6.2f} s  {args.small_mib / small_wall:7.1f} MiB/s"
    )
    print(
        f"{args.large_mib:5d} MiB asset                peak RSS {large_rss / MIB:7.1f} MiB   {large_wall:6.2f} s  {args.large_mib / large_wall:7.1f} MiB/s"
    )
    print(f"large / small peak RSS         {large_rss / small_rss:7.3f}")


def _make(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    block = bytes(range(256)) * (4 * 4096)  # 4 MiB of a repeating pattern
    with path.open("wb") as f:
        for i in range(mib // 4):
            chunk = i.to_bytes(8, "big") + block[8:]
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    main()
