"""The S3 store against a real S3-protocol server (moto, on loopback)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from astroingest._exceptions import IntegrityError, StoreError
from astroingest._ledger import Ledger
from astroingest._retry import RetryPolicy
from astroingest.stores._s3common import S3Location, S3Settings
from astroingest.stores.s3 import MiB, S3Store, part_size_for
from tests.s3server import FaultyProxy, MotoServer

PART = 5 * MiB
BUCKET = "astro-raw-test"


def make_store(
    endpoint: str,
    *,
    prefix: str = "raw",
    parts_in_flight: int = 2,
    retries: int = 3,
    ledger: Ledger | None = None,
) -> S3Store:
    store = S3Store(
        S3Location.parse(f"s3://{BUCKET}/{prefix}"),
        S3Settings(endpoint),
        part_size=PART,
        parts_in_flight=parts_in_flight,
        retry=RetryPolicy(retries, floor=0.01, ceiling=0.05),
    )
    if ledger is not None:
        store.bind_ledger(ledger)
    return store


@pytest.fixture
async def store(s3: MotoServer) -> AsyncIterator[S3Store]:
    s3.client().create_bucket(Bucket=BUCKET)
    opened = make_store(s3.endpoint)
    yield opened
    await opened.close()


def body_of(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB of pattern
    return (block * (size // len(block) + 1))[:size]


async def upload(store: S3Store, key: str, data: bytes, chunk: int = 64 * 1024) -> str:
    sha = hashlib.sha256(data).hexdigest()
    async with await store.open_writer(key) as writer:
        for i in range(0, len(data), chunk):
            await writer.write(data[i : i + chunk])
        await writer.commit(sha)
    return sha


def pending_uploads(s3: MotoServer) -> list[Any]:
    return list(s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))


@pytest.mark.parametrize(
    "size", [0, 1, PART - 1, PART, PART + 1, 3 * PART + 7], ids=lambda n: f"{n}B"
)
async def test_sizes_around_part_boundaries_round_trip(
    store: S3Store, s3: MotoServer, size: int
) -> None:
    data = body_of(size)
    sha = await upload(store, "a/b.fits", data)

    client = s3.client()
    got = client.get_object(Bucket=BUCKET, Key="raw/a/b.fits")
    assert got["Body"].read() == data
    assert await store.object_sha256("a/b.fits") == sha
    info = await store.stat("a/b.fits")
    assert info is not None and info.size == size
    assert pending_uploads(s3) == []
    head = client.head_object(Bucket=BUCKET, Key="raw/a/b.fits", ChecksumMode="ENABLED")
    parts = -(-size // PART)
    if parts <= 1:  # one PutObject carrying the whole object's SHA-256
        assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(sha)).decode()
    else:  # S3's composite: the SHA-256 of the parts' SHA-256s, and the part count
        digests = b"".join(
            hashlib.sha256(data[i : i + PART]).digest() for i in range(0, size, PART)
        )
        composite = base64.b64encode(hashlib.sha256(digests).digest()).decode()
        # AWS appends "-<part count>"; moto leaves it off.
        assert head["ChecksumSHA256"].removesuffix(f"-{parts}") == composite


async def test_published_sha256_goes_into_metadata_of_a_multipart_object(
    store: S3Store, s3: MotoServer
) -> None:
    data = body_of(2 * PART + 10)
    sha = hashlib.sha256(data).hexdigest()
    async with await store.open_writer("big.nc", size=len(data), sha256=sha.upper()) as writer:
        await writer.write(data)
        await writer.commit(sha)
    head = s3.client().head_object(Bucket=BUCKET, Key="raw/big.nc")
    assert head["Metadata"]["sha256"] == sha


async def test_checksum_mismatch_aborts_and_leaves_nothing(store: S3Store, s3: MotoServer) -> None:
    data = body_of(2 * PART + 1)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        async with await store.open_writer("x.bin", sha256=wrong) as writer:
            await writer.write(data)
            await writer.commit(hashlib.sha256(data).hexdigest())
    assert await store.stat("x.bin") is None
    assert pending_uploads(s3) == []


async def test_error_in_the_block_aborts_the_multipart_upload(
    store: S3Store, s3: MotoServer
) -> None:
    with pytest.raises(RuntimeError, match="body broke"):
        async with await store.open_writer("y.bin") as writer:
            await writer.write(body_of(3 * PART))
            raise RuntimeError("body broke")
    assert await store.stat("y.bin") is None
    assert pending_uploads(s3) == []


async def test_cancellation_aborts_the_multipart_upload(store: S3Store, s3: MotoServer) -> None:
    started = asyncio.Event()

    async def endless() -> None:
        async with await store.open_writer("z.bin") as writer:
            while True:
                await writer.write(body_of(MiB))
                started.set()

    task = asyncio.create_task(endless())
    await started.wait()
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.stat("z.bin") is None
    assert pending_uploads(s3) == []


async def test_same_bytes_twice_make_one_version(store: S3Store, s3: MotoServer) -> None:
    s3.client().put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for size in (10, 2 * PART + 3):
        data = body_of(size, seed=size)
        await upload(store, f"v{size}", data)
        await upload(store, f"v{size}", data)
        assert versions_of(s3, f"raw/v{size}") == 1
    await upload(store, "v10", b"changed")
    assert versions_of(s3, "raw/v10") == 2
    assert pending_uploads(s3) == []


def versions_of(s3: MotoServer, key: str) -> int:
    listed = s3.client().list_object_versions(Bucket=BUCKET, Prefix=key)
    return sum(1 for v in listed.get("Versions", []) if v["Key"] == key)


async def test_memory_stays_bounded_by_parts_in_flight(store: S3Store, s3: MotoServer) -> None:
    size = 12 * PART
    chunk = body_of(256 * 1024)
    digest = hashlib.sha256()
    await store.client()  # botocore's models are loaded once per process, not per object
    tracemalloc.start()
    try:
        async with await store.open_writer("mem.bin") as writer:
            for _ in range(size // len(chunk)):
                digest.update(chunk)
                await writer.write(chunk)
            await writer.commit(digest.hexdigest())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # (2 in flight + 1 filling) parts and a small constant, whatever the object's size
    # (tracemalloc counts the whole process: other tests' server threads add a little).
    assert peak < (2 + 1) * PART + 6 * MiB < size / 2, f"peak {peak / MiB:.1f} MiB"


async def test_failed_parts_are_retried(s3: MotoServer) -> None:
    s3.client().create_bucket(Bucket=BUCKET)
    with FaultyProxy(s3.endpoint) as proxy:
        proxy.fail("partNumber=2", times=2, status=503, code="SlowDown")
        proxy.fail("partNumber=3", times=1, status=500, code="InternalError")
        store = make_store(proxy.endpoint)
        try:
            data = body_of(3 * PART + 5)
            await upload(store, "retried.bin", data)
        finally:
            await store.close()
        uploads_of_2 = [line for line in proxy.seen if "partNumber=2" in line]
    assert len(uploads_of_2) == 3
    got = s3.client().get_object(Bucket=BUCKET, Key="raw/retried.bin")["Body"].read()
    assert got == data


async def test_retries_run_out_then_the_upload_is_aborted(s3: MotoServer) -> None:
    s3.client().create_bucket(Bucket=BUCKET)
    with FaultyProxy(s3.endpoint) as proxy:
        proxy.fail("partNumber=2", times=100, status=503, code="SlowDown")
        store = make_store(proxy.endpoint, retries=2)
        try:
            with pytest.raises(Exception, match="SlowDown"):
                await upload(store, "doomed.bin", body_of(3 * PART))
        finally:
            await store.close()
    assert pending_uploads(s3) == []


async def test_permanent_errors_fail_at_once_naming_the_bucket(s3: MotoServer) -> None:
    store = make_store(s3.endpoint)  # the bucket was never created
    try:
        with pytest.raises(StoreError) as caught:
            await upload(store, "k", b"data")
    finally:
        await store.close()
    message = str(caught.value)
    assert "NoSuchBucket" in message and repr(BUCKET) in message
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in message


async def test_an_interrupted_upload_continues_sending_only_missing_parts(
    s3: MotoServer, tmp_path: Path
) -> None:
    s3.client().create_bucket(Bucket=BUCKET)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    data = body_of(5 * PART + 11)
    sha = hashlib.sha256(data).hexdigest()

    first = make_store(s3.endpoint, ledger=ledger)
    writer = await first.open_writer("resume.bin")
    await writer.write(data[: 3 * PART + 100])
    await writer._drain()  # three parts landed; then the process "dies": no abort
    await first.close()
    assert len(pending_uploads(s3)) == 1

    with FaultyProxy(s3.endpoint) as proxy:
        second = make_store(proxy.endpoint, ledger=ledger)
        try:
            async with await second.open_writer("resume.bin") as again:
                await again.write(data)
                await again.commit(sha)
        finally:
            await second.close()
        sent = sorted(
            line.split("partNumber=")[1].split("&")[0]
            for line in proxy.seen
            if "partNumber=" in line and line.startswith("PUT")
        )
    assert again.resumed_parts == 3  # type: ignore[attr-defined]
    assert sent == ["4", "5", "6"]
    assert s3.client().get_object(Bucket=BUCKET, Key="raw/resume.bin")["Body"].read() == data
    assert pending_uploads(s3) == []
    assert ledger.upload_get(second.url, "raw/resume.bin") is None
    ledger.close()


async def test_a_changed_body_does_not_reuse_stale_parts(s3: MotoServer, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket=BUCKET)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    old = body_of(3 * PART, seed=1)
    first = make_store(s3.endpoint, ledger=ledger)
    writer = await first.open_writer("changed.bin")
    await writer.write(old + b"x")
    await writer._drain()
    await first.close()

    new = body_of(PART, seed=1) + body_of(2 * PART, seed=2) + b"y"  # part 1 same, 2-3 differ
    second = make_store(s3.endpoint, ledger=ledger)
    try:
        async with await second.open_writer("changed.bin") as again:
            await again.write(new)
            await again.commit(hashlib.sha256(new).hexdigest())
    finally:
        await second.close()
    assert again.resumed_parts == 1  # type: ignore[attr-defined]
    assert s3.client().get_object(Bucket=BUCKET, Key="raw/changed.bin")["Body"].read() == new
    ledger.close()


async def test_recover_aborts_uploads_left_for_more_than_a_day(
    s3: MotoServer, tmp_path: Path
) -> None:
    s3.client().create_bucket(Bucket=BUCKET)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    store = make_store(s3.endpoint, ledger=ledger)
    try:
        writer = await store.open_writer("old.bin")
        await writer.write(body_of(PART + 1))
        await writer._drain()
        assert await store.recover() == 0  # fresh: kept for a rerun to continue
        record = ledger.upload_get(store.url, "raw/old.bin")
        assert record is not None
        ledger.upload_put(dataclasses.replace(record, started_at=record.started_at - 2 * 86400))
        assert await store.recover() == 1
    finally:
        await store.close()
    assert pending_uploads(s3) == []
    ledger.close()


async def test_a_body_of_one_part_diverts_to_another_store(store: S3Store, s3: MotoServer) -> None:
    other = make_store(s3.endpoint, prefix="quarantine")
    try:
        async with await store.open_writer("page.html") as writer:
            await writer.write(b"<html>login</html>")
            await writer.divert(
                other, "src/page.html", hashlib.sha256(b"<html>login</html>").hexdigest()
            )
    finally:
        await other.close()
    assert await store.stat("page.html") is None
    assert (await other.stat("src/page.html")) is not None


def test_part_size_grows_so_5_tib_fits_in_10000_parts() -> None:
    base = 8 * MiB
    total = sum(part_size_for(None, base, n) for n in range(1, 10_001))
    assert total >= 5 * 1024**4
    assert all(part_size_for(None, base, n) <= 5 * 1024**3 for n in range(1, 10_001))
    assert part_size_for(None, base, 1) == base
    known = 5 * 1024**4
    assert -(-known // part_size_for(known, base, 1)) <= 10_000
    assert part_size_for(100, base, 1) == base


async def test_list_pages_through_keys_under_a_prefix(store: S3Store, s3: MotoServer) -> None:
    client = s3.client()
    for i in range(1005):  # more than one page of 1,000
        client.put_object(Bucket=BUCKET, Key=f"raw/ckpt/{i:05d}.pt", Body=b"x" * (i % 3))
    client.put_object(Bucket=BUCKET, Key="raw/other/a.npy", Body=b"y")
    client.put_object(Bucket=BUCKET, Key="elsewhere/b.npy", Body=b"z")
    found = [info async for info in store.list("ckpt/")]
    assert len(found) == 1005
    assert found[0].key == "ckpt/00000.pt" and found[2].size == 2
    assert [i.key async for i in store.list("other/")] == ["other/a.npy"]
