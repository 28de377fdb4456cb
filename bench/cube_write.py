"""Writing a cube: astroingest's cube writer against plain zarr-python, to the same stores.

A float32 cube (default 1 GiB, 4 MiB chunks of 16 x 256 x 256) goes into an Icechunk
repository on local disk and on a moto S3 server on loopback, two ways, each in its own
process so its peak RSS is its own:

- astroingest: `CubeWriter.append` of batches as a converter hands them over (statistics,
  manifest and the commit included);
- baseline: plain zarr-python `arr[:] = x` of the whole array through the same kind of
  store, then the commit.

Targets: throughput >= 1.0x plain zarr; astroingest's peak RSS bounded by the chunks in
flight, not by the cube's size (the baseline holds the whole array by its nature).

    python bench/cube_write.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _common import run_measured  # noqa: E402

from tests.s3server import CREDENTIALS, MotoServer  # noqa: E402

MIB = 1024 * 1024
SIDE = 256
STEP = SIDE * SIDE * 4  # bytes per time step
CHUNK_STEPS = 16  # 4 MiB chunks

FIELD = f"""
import numpy as np
def field(start, count):
    # A smooth, compressible field that changes with time, cheap to make.
    t = np.arange(start, start + count, dtype="float32")[:, None, None]
    y = np.linspace(0, 3, {SIDE}, dtype="float32")[None, :, None]
    x = np.linspace(0, 6, {SIDE}, dtype="float32")[None, None, :]
    return (np.sin(x + 0.01 * t) * np.cos(y) + 0.001 * t).astype("float32")
"""

OURS = (
    FIELD
    + """
import sys
from astroingest.cubes import Array, Batch, CubeLocation, CubeWriter, Layout
url, endpoint, steps = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
CHUNK = int(sys.argv[4])
location = CubeLocation(url, endpoint_url=endpoint)
with CubeWriter(location, "bench", "grid", Layout("time", chunks={"time": CHUNK})) as writer:
    for start in range(0, steps, 16 * CHUNK):  # what the grid converter hands over (64 MiB)
        n = min(16 * CHUNK, steps - start)
        writer.append(Batch({"t2m": Array(("time", "y", "x"), field(start, n))}))
    assert writer.commit({"bench/in": "0"}, {}) is not None
"""
)

PLAIN = (
    FIELD
    + """
import sys
import zarr
from zarr.codecs import ZstdCodec
from astroingest.cubes import CubeLocation, open_repository
url, endpoint, steps = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
repo = open_repository(CubeLocation(url, endpoint_url=endpoint), create=True)
session = repo.writable_session("main")
group = zarr.open_group(session.store, mode="a")
side, chunk = int(sys.argv[5]), int(sys.argv[4])
arr = group.create_array("t2m", shape=(steps, side, side), chunks=(chunk, side, side), dtype="float32",
                         compressors=[ZstdCodec(level=3)], dimension_names=("time", "y", "x"))
arr[:] = field(0, steps)
session.commit("plain zarr")
"""
)


def measure(name: str, script: str, url: str, endpoint: str, steps: int) -> tuple[float, int]:
    status, wall, rss = run_measured(
        [sys.executable, "-c", script, url, endpoint, str(steps), str(CHUNK_STEPS), str(SIDE)]
    )
    if status != 0:
        raise SystemExit(f"{name} failed with status {status}")
    rate = steps * STEP / wall / 1e6
    print(f"  {name:<24} {wall:7.2f} s  {rate:7.1f} MB/s  peak RSS {rss / MIB:7.1f} MiB")
    return rate, rss


def compare(label: str, ours_url: str, plain_url: str, endpoint: str, steps: int) -> None:
    print(label)
    ours, ours_rss = measure("astroingest CubeWriter", OURS, ours_url, endpoint, steps)
    plain, plain_rss = measure("zarr arr[:] = x", PLAIN, plain_url, endpoint, steps)
    print(
        f"  throughput vs plain zarr: {ours / plain:.2f}x (target >= 1.0); "
        f"peak RSS {ours_rss / MIB:.0f} MiB vs {plain_rss / MIB:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024, help="cube size in MiB")
    parser.add_argument("--no-s3", action="store_true", help="local disk only")
    args = parser.parse_args()
    steps = args.mib * MIB // STEP
    os.environ.update(CREDENTIALS)
    os.environ.setdefault("ICECHUNK_LOG", "error")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        compare(
            f"{args.mib} MiB cube, local disk",
            (root / "ours").as_uri(),
            (root / "plain").as_uri(),
            "",
            steps,
        )
        if args.no_s3:
            return
        server = MotoServer().start()
        try:
            server.client().create_bucket(Bucket="bench-cubes")
            compare(
                f"{args.mib} MiB cube, moto S3 at {server.endpoint}",
                "s3://bench-cubes/ours",
                "s3://bench-cubes/plain",
                server.endpoint,
                steps,
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
