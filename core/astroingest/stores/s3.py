"""The S3 store: bodies streamed into multipart uploads, completed only once verified.

Memory per object stays under (parts in flight + 1) x part size: a writer fills one part
buffer while at most ``parts_in_flight`` parts (shared by all writers of the store)
travel. A body that fits in one part goes as a single PutObject. Every part carries its
SHA-256 to S3; the object's own sha256 goes into its metadata when the source published
it ahead, else into an object tag right after completion (S3 fixes metadata when the
upload starts, before the body is read).

Uploads are recorded in the run's ledger part by part. A rerun of an object whose upload
was interrupted continues that upload: the body is read again (hashes and validators
need every byte; their state cannot be saved), parts whose bytes S3 already holds are
not sent again, and only the missing ones travel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from astroingest._exceptions import IntegrityError, RetryableError, StoreError
from astroingest._hookimpl import hookimpl
from astroingest._keys import sanitize_key
from astroingest._ledger import Ledger, UploadPart, UploadRecord
from astroingest._retry import RetryPolicy
from astroingest.stores._base import ObjectInfo, ObjectWriter, Store, StoreType
from astroingest.stores._s3common import S3Location, S3Settings, classify, error_code, s3_client

log = logging.getLogger("astroingest")
T = TypeVar("T")

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's floor for every part but the last
MAX_PART = 5 * 1024 * MiB
MAX_PARTS = 10_000
DEFAULT_PART = 8 * MiB
NOT_FOUND = ("404", "NoSuchKey", "NotFound")
NO_UPLOAD = ("NoSuchUpload", "404")
STALE_UPLOAD_SECONDS = 24 * 3600  # the bucket lifecycle rule aborts them after a day too


def part_size_for(size: int | None, base: int, number: int) -> int:
    """The size of part ``number`` (1-based).

    Known size: one size, large enough that the body fits in 10,000 parts. Unknown size:
    ``base`` for the first 1,000 parts, doubling every 1,000 after, so that a 5 TiB
    stream from an 8 MiB start still fits (1,000 x (8 + 16 + … + 4,096) MiB ≈ 8 TiB).
    """
    if size is not None:
        return min(MAX_PART, max(base, -(-size // (MAX_PARTS - 1))))
    return min(MAX_PART, base << ((number - 1) // 1000))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class _PartBody(io.RawIOBase):
    """A read-only file over a part's bytes.

    botocore wraps a bytes body in a BytesIO, which aiohttp then copies whole; a file
    is read in small chunks instead, so a part in flight costs its size once, not twice.
    """

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._view) - self._pos)
        buffer[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos


class S3Store(Store):
    def __init__(
        self,
        location: S3Location,
        settings: S3Settings,
        *,
        part_size: int = DEFAULT_PART,
        parts_in_flight: int = 8,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not MIN_PART <= part_size <= MAX_PART:
            raise StoreError(f"part_size must be between {MIN_PART} and {MAX_PART} bytes")
        self.location = location
        self.settings = settings
        self.url = location.url
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.retry = retry or RetryPolicy()
        self.ledger: Ledger | None = None
        self._slots: asyncio.Semaphore | None = None
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._opening = asyncio.Lock()

    # -- plumbing ---------------------------------------------------------------------

    def bind_ledger(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def client(self) -> Any:
        async with self._opening:
            if self._client is None:
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    s3_client(self.settings, max_connections=self.parts_in_flight * 4 + 8)
                )
                self._stack = stack
        return self._client

    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.parts_in_flight)
        return self._slots

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def call(
        self, action: str, method: str, *, absent: tuple[str, ...] = (), **kwargs: Any
    ) -> Any:
        """One S3 request under the run's retry policy; failures named by bucket and code.

        Error codes listed in ``absent`` (a missing key, a finished upload) return None.
        """
        client = await self.client()

        async def once() -> Any:
            body = kwargs.get("Body")
            if isinstance(body, io.IOBase):
                body.seek(0)  # a retry sends the whole body again
            try:
                return await getattr(client, method)(Bucket=self.location.bucket, **kwargs)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as error:
                if absent and error_code(error) in absent:
                    return None
                raise classify(error, self.location.bucket, action) from None

        return await self.retried(action, once)

    async def retried(self, action: str, once: Callable[[], Awaitable[T]]) -> T:
        """Retries here, not around the whole asset: refetching from the archive because
        S3 stumbled would cost the archive for nothing. Out of retries is final."""
        try:
            async for attempt in self.retry.attempts(f"S3 {action} on {self.url}"):
                with attempt:
                    return await once()
        except RetryableError as error:
            raise StoreError(f"{error} (gave up after {self.retry.retries + 1} tries)") from None
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def object_key(self, key: str) -> str:
        return self.location.key(sanitize_key(key))

    # -- the Store contract -----------------------------------------------------------

    async def open_writer(
        self, key: str, *, size: int | None = None, sha256: str | None = None
    ) -> S3Writer:
        return S3Writer(self, key, self.object_key(key), size, sha256)

    async def stat(self, key: str) -> ObjectInfo | None:
        head = await self._head(self.object_key(key))
        if head is None:
            return None
        sha256 = head.get("Metadata", {}).get("sha256")
        return ObjectInfo(key, int(head["ContentLength"]), sha256)

    async def _head(self, object_key: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.call(
            "HeadObject", "head_object", absent=NOT_FOUND, Key=object_key
        )
        return result

    async def object_sha256(self, key: str) -> str | None:
        info = await self.stat(key)
        if info is None:
            return None
        if info.sha256:
            return info.sha256
        tags = await self.call(
            "GetObjectTagging", "get_object_tagging", absent=NOT_FOUND, Key=self.object_key(key)
        )
        found = {t["Key"]: t["Value"] for t in (tags or {}).get("TagSet", [])}
        return found.get("sha256")

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        response = await self.call("GetObject", "get_object", Key=self.object_key(key))
        body = response["Body"]
        try:
            async for chunk in body.iter_chunks(chunk_size):
                yield chunk
        finally:
            body.close()

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"ContinuationToken": token} if token else {}
            page = await self.call(
                "ListObjectsV2", "list_objects_v2", Prefix=self.location.key(prefix), **extra
            )
            for item in page.get("Contents", []):
                key = item["Key"][len(self.location.prefix) :]
                yield ObjectInfo(key, int(item["Size"]))
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    async def put_bytes(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data).digest()
        await self.call(
            "PutObject",
            "put_object",
            Key=self.object_key(key),
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(digest),
            Metadata={"sha256": digest.hex()},
        )

    async def delete(self, key: str) -> None:
        await self.call("DeleteObject", "delete_object", Key=self.object_key(key))

    async def recover(self) -> int:
        """Abort uploads this ledger started more than a day ago and never finished."""
        if self.ledger is None:
            return 0
        stale = self.ledger.uploads_started_before(self.url, time.time() - STALE_UPLOAD_SECONDS)
        for record in stale:
            with contextlib.suppress(StoreError):
                await self.abort_upload(record.key, record.upload_id)
            self.ledger.upload_drop(self.url, record.key, record.upload_id)
        return len(stale)

    async def abort_upload(self, object_key: str, upload_id: str) -> None:
        await self.call(
            "AbortMultipartUpload",
            "abort_multipart_upload",
            absent=NO_UPLOAD,
            Key=object_key,
            UploadId=upload_id,
        )

    async def existing_parts(self, record: UploadRecord) -> dict[int, UploadPart] | None:
        """The parts S3 holds for a recorded upload, or None when the upload is gone."""
        on_server: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            listed = await self.call(
                "ListParts",
                "list_parts",
                absent=NO_UPLOAD,
                Key=record.key,
                UploadId=record.upload_id,
                PartNumberMarker=marker,
            )
            if listed is None:
                return None
            for p in listed.get("Parts", []):
                on_server[int(p["PartNumber"])] = (int(p["Size"]), p["ETag"])
            if not listed.get("IsTruncated"):
                break
            marker = int(listed["NextPartNumberMarker"])
        # Ours, and only where S3 agrees: the recorded checksum is what the bytes hashed to.
        return {p.number: p for p in record.parts if on_server.get(p.number) == (p.size, p.etag)}


class S3Writer(ObjectWriter):
    """One object's upload. Nothing is visible under the key until ``commit``."""

    def __init__(
        self,
        store: S3Store,
        key: str,
        object_key: str,
        size: int | None,
        sha256: str | None,
    ) -> None:
        self.store = store
        self.key = key
        self.object_key = object_key
        self.size_hint = size
        self.sha256_hint = sha256.lower() if sha256 else None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._next_part = 1
        self._sent = 0
        self._upload_id: str | None = None
        self._started_at = 0.0
        self._parts: dict[int, UploadPart] = {}
        self._reusable: dict[int, UploadPart] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._done = False
        self.resumed_parts = 0

    def _part_size(self) -> int:
        return part_size_for(self.size_hint, self.store.part_size, self._next_part)

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise StoreError(f"write after commit or abort: {self.key}")
        if self._failure is not None:
            raise self._failure
        if not chunk:
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        while self._buffered >= (size := self._part_size()) and (
            # The last part goes at commit: a body of exactly one part stays a PutObject.
            self._buffered > size or self._upload_id is not None
        ):
            await self._send(self._take(size))

    def _take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes, copied once (no second copy of the rest)."""
        taken: list[bytes] = []
        need = size
        while need:
            chunk = self._chunks.popleft()
            if len(chunk) > need:
                self._chunks.appendleft(chunk[need:])
                chunk = chunk[:need]
            taken.append(chunk)
            need -= len(chunk)
        self._buffered -= size
        return taken[0] if len(taken) == 1 else b"".join(taken)

    async def _send(self, data: bytes) -> None:
        if self._upload_id is None:
            await self._start()
        number = self._next_part
        self._next_part += 1
        self._sent += len(data)
        await self.store.slots().acquire()  # back-pressure: at most N parts in flight
        task = asyncio.create_task(self._upload_part(number, data))
        self._tasks.add(task)
        task.add_done_callback(self._part_done)

    def _part_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.store.slots().release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _start(self) -> None:
        ledger = self.store.ledger
        record = ledger.upload_get(self.store.url, self.object_key) if ledger else None
        if record is not None:
            parts = await self.store.existing_parts(record)
            if parts is not None and record.part_size == self._part_size():
                self._upload_id, self._started_at = record.upload_id, record.started_at
                self._reusable = parts
                log.info(
                    "continuing the upload of %s: %d parts already in S3",
                    self.key,
                    len(parts),
                )
                return
            if parts is not None:  # another part size: those parts are of no use
                await self.store.abort_upload(record.key, record.upload_id)
            if ledger is not None:
                ledger.upload_drop(self.store.url, record.key, record.upload_id)
        metadata = {"sha256": self.sha256_hint} if self.sha256_hint else {}
        created = await self.store.call(
            "CreateMultipartUpload",
            "create_multipart_upload",
            Key=self.object_key,
            ChecksumAlgorithm="SHA256",
            Metadata=metadata,
        )
        self._upload_id, self._started_at = created["UploadId"], time.time()
        self._journal()

    def _journal(self) -> None:
        if self.store.ledger is None or self._upload_id is None:
            return
        self.store.ledger.upload_put(
            UploadRecord(
                self.store.url,
                self.object_key,
                self._upload_id,
                self._part_size() if self._next_part == 1 else self._first_part_size(),
                tuple(sorted(self._parts.values(), key=lambda p: p.number)),
                self._started_at,
            )
        )

    def _first_part_size(self) -> int:
        return part_size_for(self.size_hint, self.store.part_size, 1)

    async def _upload_part(self, number: int, data: bytes) -> None:
        digest = await asyncio.to_thread(lambda: _b64(hashlib.sha256(data).digest()))
        reusable = self._reusable.get(number)
        if reusable is not None and reusable.sha256 == digest and reusable.size == len(data):
            self._parts[number] = reusable
            self.resumed_parts += 1
            return
        sent = await self.store.call(
            "UploadPart",
            "upload_part",
            Key=self.object_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=_PartBody(data),
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=digest,
        )
        if sent.get("ChecksumSHA256") not in (None, digest):
            raise IntegrityError(f"S3 hashed part {number} of {self.key} differently")
        self._parts[number] = UploadPart(number, len(data), digest, sent["ETag"])
        self._journal()

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._failure is not None:
            raise self._failure

    async def commit(self, sha256: str | None = None) -> None:
        if self._done:
            raise StoreError(f"commit after commit or abort: {self.key}")
        if sha256 is None:
            raise StoreError("the S3 store needs the object's sha256 to commit")
        sha256 = sha256.lower()
        if self.sha256_hint and sha256 != self.sha256_hint:
            raise IntegrityError(
                f"sha256 mismatch for {self.key}: got {sha256}, published {self.sha256_hint}"
            )
        if self._upload_id is None:
            await self._put_whole(sha256)
        else:
            await self._complete(sha256)
        self._done = True

    async def _put_whole(self, sha256: str) -> None:
        body = b"".join(self._chunks)
        if await self._same_exists(sha256, len(body)):
            return  # idempotent: the very same bytes are already there
        await self.store.call(
            "PutObject",
            "put_object",
            Key=self.object_key,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(bytes.fromhex(sha256)),
            Metadata={"sha256": sha256},
        )

    async def _complete(self, sha256: str) -> None:
        if self._buffered:
            await self._send(self._take(self._buffered))
        await self._drain()
        if await self._same_exists(sha256, self._sent):
            await self.abort()  # the same bytes are already stored: no second version
            return
        parts = [
            {"PartNumber": p.number, "ETag": p.etag, "ChecksumSHA256": p.sha256}
            for p in sorted(self._parts.values(), key=lambda p: p.number)
        ]
        await asyncio.shield(
            self.store.call(
                "CompleteMultipartUpload",
                "complete_multipart_upload",
                Key=self.object_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
        )
        self._forget()
        if not self.sha256_hint:
            await self.store.call(
                "PutObjectTagging",
                "put_object_tagging",
                Key=self.object_key,
                Tagging={"TagSet": [{"Key": "sha256", "Value": sha256}]},
            )

    async def _same_exists(self, sha256: str, size: int) -> bool:
        info = await self.store.stat(self.key)
        if info is None or info.size != size:
            return False
        return await self.store.object_sha256(self.key) == sha256

    def _forget(self) -> None:
        if self.store.ledger is not None and self._upload_id is not None:
            self.store.ledger.upload_drop(self.store.url, self.object_key, self._upload_id)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._chunks.clear()
        await asyncio.shield(self._abort())

    async def _abort(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._upload_id is None:
            return
        try:
            await self.store.abort_upload(self.object_key, self._upload_id)
        except StoreError as error:
            # Kept in the ledger: the next run continues or aborts it.
            log.warning("could not abort the upload of %s: %s", self.key, error)
            return
        self._forget()

    async def divert(self, store: Store, key: str, sha256: str | None = None) -> None:
        if self._upload_id is None:
            async with await store.open_writer(key) as other:
                for chunk in self._chunks:
                    await other.write(chunk)
                await other.commit(sha256)
            await self.abort()
            return
        # The parts already in S3 cannot be read back before completion, and the body is
        # gone: only the quality report is kept for bodies larger than one part.
        log.warning(
            "%s: body larger than one part; not kept in the quarantine, only its report", key
        )
        await self.abort()


def open_s3_store(url: str, options: Mapping[str, Any]) -> S3Store:
    retry = RetryPolicy(
        int(options.get("retries", 5)),
        float(options.get("backoff", 0.5)),
        float(options.get("max_backoff", 60)),
    )
    return S3Store(
        S3Location.parse(url),
        S3Settings.from_options(options),
        part_size=int(options.get("part_size") or DEFAULT_PART),
        parts_in_flight=int(options.get("parts_in_flight") or 8),
        retry=retry,
    )


@hookimpl
def astroingest_stores() -> list[StoreType]:
    return [StoreType("s3", open_s3_store, "S3 or S3-compatible (streaming multipart, verified)")]
