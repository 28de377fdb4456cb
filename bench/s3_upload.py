"""Streaming into S3: astroingest against boto3 and aioboto3, to the same moto server.

One body (default 1 GiB, and 256 MiB to show memory stays flat) goes into a moto S3
server on loopback three ways, each in its own process so its peak RSS is its own:

- astroingest: `astroingest run` streams it from a local HTTP archive into s3:// (hashed,
  validated, multipart with SHA-256 per part, completed after verification);
- boto3 `upload_file` of the same bytes from disk (the baseline for throughput);
- aioboto3 `upload_fileobj` from the same HTTP stream (the baseline for memory).

Targets: throughput >= 1.0x boto3 upload_file; peak RSS <= 0.5x aioboto3's and flat from
256 MiB to 1 GiB. Needs the test extras (moto server, boto3).

    python bench/s3_upload.py [--sizes 256,1024]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _common import archive_process, run_measured  # noqa: E402

from tests.s3server import CREDENTIALS, MotoServer  # noqa: E402

MIB = 1024 * 1024
BUCKET = "bench-upload"

BOTO3 = """
import boto3, sys
client = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
client.upload_file(sys.argv[2], sys.argv[3], sys.argv[4])
"""

AIOBOTO3 = """
import asyncio, sys
import aioboto3, httpx

class Stream:
    def __init__(self, response):
        self.chunks = response.aiter_raw()
        self.rest = b""
    async def read(self, size=-1):
        while size < 0 or len(self.rest) < size:
            try:
                self.rest += await self.chunks.__anext__()
            except StopAsyncIteration:
                break
        if size < 0:
            out, self.rest = self.rest, b""
        else:
            out, self.rest = self.rest[:size], self.rest[size:]
        return out

async def main():
    session = aioboto3.Session()
    async with httpx.AsyncClient() as http, session.client(
        "s3", endpoint_url=sys.argv[1], region_name="us-east-1"
    ) as s3:
        async with http.stream("GET", sys.argv[2]) as response:
            await s3.upload_fileobj(Stream(response), sys.argv[3], sys.argv[4])

asyncio.run(main())
"""


def write_body(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(block)
            block = block[1:] + block[:1]  # not one repeated MiB: no dedup anywhere


def sources_toml(
    directory: Path, endpoint: str, url: str, prefix: str, part_mib: int, parts: int
) -> Path:
    path = directory / f"{prefix}.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [store]
            raw = "s3://{BUCKET}/{prefix}"
            logs = "{(directory / "logs").as_uri()}"
            endpoint_url = "{endpoint}"
            part_size = {part_mib * MIB}
            parts_in_flight = {parts}

            [sources.bench]
            plugin = "http"
            urls = ["{url}"]
            """
        )
    )
    return path


def measure(name: str, args: list[str], size: int) -> tuple[float, int]:
    status, wall, rss = run_measured(args)
    if status != 0:
        raise SystemExit(f"{name} failed with status {status}")
    rate = size / wall / 1e6
    print(f"  {name:<28} {wall:7.2f} s  {rate:7.1f} MB/s  peak RSS {rss / MIB:7.1f} MiB")
    return rate, rss


def empty_bucket(server: MotoServer) -> None:
    client = server.client()
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="256,1024", help="body sizes in MiB")
    parser.add_argument("--part-mib", type=int, default=8, help="astroingest's part_size")
    parser.add_argument("--parts", type=int, default=8, help="astroingest's parts_in_flight")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    python = sys.executable
    ours_rss: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = MotoServer().start()
        try:
            server.client().create_bucket(Bucket=BUCKET)
            for mib in (int(s) for s in args.sizes.split(",")):
                size = mib * MIB
                (root / "www").mkdir(exist_ok=True)
                body = root / "www" / "body.bin"
                write_body(body, size)
                print(f"{mib} MiB body, moto at {server.endpoint}")
                with archive_process(root / "www") as base:
                    url = f"{base}/body.bin"
                    toml = sources_toml(
                        root, server.endpoint, url, f"ours{mib}", args.part_mib, args.parts
                    )
                    ours, rss = measure(
                        "astroingest run (stream)",
                        [python, "-m", "astroingest", "run", "--sources", str(toml)],
                        size,
                    )
                    ours_rss[mib] = rss
                    empty_bucket(server)
                    boto3, _ = measure(
                        "boto3 upload_file (disk)",
                        [python, "-c", BOTO3, server.endpoint, str(body), BUCKET, "b3"],
                        size,
                    )
                    empty_bucket(server)
                    _, aio_rss = measure(
                        "aioboto3 upload_fileobj",
                        [python, "-c", AIOBOTO3, server.endpoint, url, BUCKET, "aio"],
                        size,
                    )
                    empty_bucket(server)
                print(
                    f"  throughput vs boto3 upload_file: {ours / boto3:.2f}x (target >= 1.0); "
                    f"peak RSS vs aioboto3 upload_fileobj: {ours_rss[mib] / aio_rss:.2f}x "
                    "(target <= 0.5)"
                )
                body.unlink()
        finally:
            server.stop()
    if len(ours_rss) > 1:
        low, high = min(ours_rss), max(ours_rss)
        print(
            f"astroingest peak RSS {low} MiB -> {high} MiB body: "
            f"{ours_rss[low] / MIB:.1f} -> {ours_rss[high] / MIB:.1f} MiB "
            f"({ours_rss[high] / ours_rss[low]:.2f}x; flat is 1.0)"
        )


if __name__ == "__main__":
    main()
