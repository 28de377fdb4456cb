"""``astroingest backup``: raw objects copied to the backup store, verified, recorded.

What to copy comes from the ledger: every asset with no copy of its current sha256 in
the backup store yet, so a rerun copies only what is new. A copy already there with the
same size and sha256 (made by S3 replication, or by a run whose ledger was lost) is
recorded, not copied again.

S3 to S3 the bytes never leave the server: CopyObject, or UploadPartCopy in parts above
``multipart_threshold`` (5 GiB, CopyObject's limit). The copy must then show the size and
the sha256 (metadata) the ledger has, and S3's own SHA-256 of a CopyObject must match;
``deep`` reads every copy back and hashes it too. Other pairs (local to S3, local to
local, S3 to local) stream through this process, hashed on the way; a body that does not
hash to the ledger's sha256 is never committed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from rich.console import Console
from rich.table import Table

from astroingest._buckets import backup_url
from astroingest._config import Config
from astroingest._exceptions import (
    AstroingestError,
    ConfigError,
    IntegrityError,
    RetryableError,
    StoreError,
)
from astroingest._keys import sanitize_key
from astroingest._ledger import BackupRecord, Ledger, LedgerRecord
from astroingest._ledger_sync import open_ledger, push_ledger
from astroingest._plugins import Host
from astroingest._progress import human_bytes
from astroingest._report import now_iso
from astroingest._retry import RetryPolicy, describe
from astroingest.stores._base import Store
from astroingest.stores._s3common import S3Location, S3Settings, s3_client, s3_request

log = logging.getLogger("astroingest")

MiB = 1024 * 1024
GiB = 1024 * MiB
COPY_OBJECT_LIMIT = 5 * GiB
MAX_PARTS = 10_000
NOT_FOUND = ("404", "NoSuchKey", "NotFound")
# Headers that describe the body; copied along when the metadata is replaced.
CONTENT_HEADERS = (
    "ContentType",
    "ContentEncoding",
    "ContentDisposition",
    "ContentLanguage",
    "CacheControl",
)

Status = Literal["copied", "present", "failed", "planned"]


@dataclass(frozen=True, slots=True)
class BackupOptions:
    dry_run: bool = False
    recheck: bool = False  # look at every asset, not only those without a recorded copy
    deep: bool = False  # read every copy back and hash it
    multipart_threshold: int = COPY_OBJECT_LIMIT  # larger objects are copied in parts
    part_size: int = 512 * MiB
    concurrency: int = 8  # objects in flight
    part_concurrency: int = 4  # part copies in flight per object


@dataclass(frozen=True, slots=True)
class Outcome:
    source: str
    key: str
    status: Status
    size: int
    error: str | None = None


class Copier(Protocol):
    async def backup(self, record: LedgerRecord) -> tuple[Status, BackupRecord]:
        """Make sure a verified copy of ``record``'s object is in the backup store."""
        ...


def _store_key(record: LedgerRecord) -> str:
    return sanitize_key(f"{record.source}/{record.key}")


def _b64(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


# -- S3 to S3: the server copies ---------------------------------------------------------


class S3Copier:
    def __init__(
        self,
        client: Any,
        raw: S3Location,
        target: S3Location,
        options: BackupOptions,
        retry: RetryPolicy,
    ) -> None:
        self.client = client
        self.raw = raw
        self.target = target
        self.options = options
        self.retry = retry

    async def request(self, action: str, **kwargs: Any) -> Any:
        async for attempt in self.retry.attempts(f"S3 {action}"):
            with attempt:
                return await s3_request(self.client, action, **kwargs)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def backup(self, record: LedgerRecord) -> tuple[Status, BackupRecord]:
        source_key = self.raw.key(_store_key(record))
        target_key = self.target.key(_store_key(record))
        head = await self.request(
            "HeadObject", absent=NOT_FOUND, Bucket=self.raw.bucket, Key=source_key
        )
        if head is None:
            raise StoreError(f"the raw object is gone: s3://{self.raw.bucket}/{source_key}")
        await self._check_source(record, head, source_key)
        version = await self._copy_of(record, target_key)
        status: Status = "present"
        if version is None:
            status = "copied"
            copy_source = {"Bucket": self.raw.bucket, "Key": source_key}
            if head.get("VersionId"):  # exactly the version checked above
                copy_source["VersionId"] = head["VersionId"]
            if record.size > self.options.multipart_threshold:
                version = await self._copy_in_parts(record, head, copy_source, target_key)
            else:
                version = await self._copy_whole(record, head, copy_source, target_key)
            await self._verify(record, target_key, version)
        elif self.options.deep:
            await self._verify(record, target_key, version)
        done = BackupRecord(
            record.source,
            record.key,
            self.target.url,
            record.sha256,
            record.size,
            target_key,
            version or None,
            now_iso(),
        )
        return status, done

    async def _check_source(self, record: LedgerRecord, head: dict[str, Any], key: str) -> None:
        if int(head["ContentLength"]) != record.size:
            raise IntegrityError(
                f"s3://{self.raw.bucket}/{key} has {head['ContentLength']} bytes, the ledger "
                f"{record.size}: not copied (run `astroingest run` to fetch it again)"
            )
        recorded = await self._sha256_of(self.raw.bucket, key, head)
        if recorded is not None and recorded != record.sha256:
            raise IntegrityError(
                f"s3://{self.raw.bucket}/{key} is not the version the ledger knows "
                "(its sha256 differs): not copied"
            )

    async def _sha256_of(self, bucket: str, key: str, head: dict[str, Any]) -> str | None:
        """The sha256 stored with an object: metadata, or a tag for some multipart uploads."""
        found = head.get("Metadata", {}).get("sha256")
        if found:
            return str(found)
        version = {"VersionId": head["VersionId"]} if head.get("VersionId") else {}
        tags = await self.request(
            "GetObjectTagging", absent=NOT_FOUND, Bucket=bucket, Key=key, **version
        )
        values = {t["Key"]: t["Value"] for t in (tags or {}).get("TagSet", [])}
        return values.get("sha256")

    async def _copy_of(self, record: LedgerRecord, key: str) -> str | None:
        """The version id ("" when unversioned) of a matching copy already there, else None."""
        head = await self.request(
            "HeadObject", absent=NOT_FOUND, Bucket=self.target.bucket, Key=key
        )
        if head is None or int(head["ContentLength"]) != record.size:
            return None
        if await self._sha256_of(self.target.bucket, key, head) != record.sha256:
            return None
        return str(head.get("VersionId") or "")

    def _metadata(self, record: LedgerRecord, head: dict[str, Any]) -> dict[str, Any]:
        """What a copy carries when its metadata is written anew: the sha256 included."""
        carried = {name: head[name] for name in CONTENT_HEADERS if head.get(name)}
        return {**carried, "Metadata": {**head.get("Metadata", {}), "sha256": record.sha256}}

    async def _copy_whole(
        self,
        record: LedgerRecord,
        head: dict[str, Any],
        copy_source: dict[str, str],
        key: str,
    ) -> str:
        if head.get("Metadata", {}).get("sha256") == record.sha256:
            metadata: dict[str, Any] = {"MetadataDirective": "COPY"}
        else:  # the sha256 was in a tag: put it where a HEAD of the copy shows it
            metadata = {"MetadataDirective": "REPLACE", **self._metadata(record, head)}
        answer = await self.request(
            "CopyObject",
            Bucket=self.target.bucket,
            Key=key,
            CopySource=copy_source,
            ChecksumAlgorithm="SHA256",  # S3 hashes the bytes it wrote
            **metadata,
        )
        version = str(answer.get("VersionId") or "")
        computed = answer.get("CopyObjectResult", {}).get("ChecksumSHA256")
        # "…-N" would be a checksum of part checksums, not of the object.
        if computed and "-" not in computed and computed != _b64(record.sha256):
            await self._discard(key, version)
            raise IntegrityError(f"S3 hashed the copy of {_store_key(record)} differently")
        return version

    async def _copy_in_parts(
        self,
        record: LedgerRecord,
        head: dict[str, Any],
        copy_source: dict[str, str],
        key: str,
    ) -> str:
        created = await self.request(
            "CreateMultipartUpload",
            Bucket=self.target.bucket,
            Key=key,
            **self._metadata(record, head),
        )
        upload_id = created["UploadId"]
        try:
            parts = await self._copy_parts(record.size, copy_source, key, upload_id)
            answer = await self.request(
                "CompleteMultipartUpload",
                Bucket=self.target.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise
        return str(answer.get("VersionId") or "")

    async def _copy_parts(
        self, size: int, copy_source: dict[str, str], key: str, upload_id: str
    ) -> list[dict[str, Any]]:
        slots = asyncio.Semaphore(self.options.part_concurrency)

        async def one(number: int, first: int, last: int) -> dict[str, Any]:
            async with slots:
                answer = await self.request(
                    "UploadPartCopy",
                    Bucket=self.target.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=copy_source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
            return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

        ranges = part_ranges(size, self.options.part_size)
        return list(await asyncio.gather(*(one(n, a, b) for n, (a, b) in enumerate(ranges, 1))))

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await s3_request(
                self.client,
                "AbortMultipartUpload",
                absent=("NoSuchUpload",),
                Bucket=self.target.bucket,
                Key=key,
                UploadId=upload_id,
            )
        except (StoreError, RetryableError) as error:  # the lifecycle rule ends it in a day
            log.warning("could not abort the part copy of %s: %s", key, error)

    async def _verify(self, record: LedgerRecord, key: str, version: str) -> None:
        where = {"VersionId": version} if version else {}
        head = await self.request(
            "HeadObject", absent=NOT_FOUND, Bucket=self.target.bucket, Key=key, **where
        )
        problem = None
        if head is None:
            problem = "is missing after the copy"
        elif int(head["ContentLength"]) != record.size:
            problem = f"has {head['ContentLength']} bytes, not {record.size}"
        elif await self._sha256_of(self.target.bucket, key, head) != record.sha256:
            problem = "does not carry the ledger's sha256"
        elif self.options.deep and await self._hash(key, where) != record.sha256:
            problem = "does not hash to the ledger's sha256"
        if problem is not None:
            await self._discard(key, version)
            raise IntegrityError(f"the copy of {_store_key(record)} {problem}")

    async def _hash(self, key: str, where: dict[str, str]) -> str:
        answer = await self.request("GetObject", Bucket=self.target.bucket, Key=key, **where)
        digest = hashlib.sha256()
        body = answer["Body"]  # `async with` closes it; what it yields is aiohttp's response
        async with body:
            while chunk := await body.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    async def _discard(self, key: str, version: str) -> None:
        """Remove a copy that failed verification, so no rerun takes it for a good one."""
        where = {"VersionId": version} if version else {}
        try:
            await self.request("DeleteObject", Bucket=self.target.bucket, Key=key, **where)
        except (StoreError, RetryableError) as error:
            log.warning("could not remove the bad copy %s: %s", key, error)


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """Inclusive byte ranges of at most 10,000 parts of at least ``part_size`` bytes."""
    part = max(part_size, -(-size // MAX_PARTS))
    return [(start, min(start + part, size) - 1) for start in range(0, size, part)]


# -- any other pair of stores: the bytes pass through ------------------------------------------


class StreamCopier:
    def __init__(self, raw: Store, target: Store, options: BackupOptions) -> None:
        self.raw = raw
        self.target = target
        self.options = options

    async def backup(self, record: LedgerRecord) -> tuple[Status, BackupRecord]:
        key = _store_key(record)
        info = await self.raw.stat(key)
        if info is None:
            raise StoreError(f"the raw object is gone: {self.raw.url}/{key}")
        if info.size != record.size:
            raise IntegrityError(
                f"{self.raw.url}/{key} has {info.size} bytes, the ledger {record.size}: "
                "not copied (run `astroingest run` to fetch it again)"
            )
        status: Status = "present"
        if not await self._present(key, record):
            status = "copied"
            await self._copy(key, record)
        done = BackupRecord(
            record.source,
            record.key,
            self.target.url,
            record.sha256,
            record.size,
            key,
            None,
            now_iso(),
        )
        return status, done

    async def _present(self, key: str, record: LedgerRecord) -> bool:
        info = await self.target.stat(key)
        if info is None or info.size != record.size:
            return False
        recorded = None if self.options.deep else await self.target.object_sha256(key)
        return (recorded or await _hash(self.target, key)) == record.sha256

    async def _copy(self, key: str, record: LedgerRecord) -> None:
        digest = hashlib.sha256()
        async with await self.target.open_writer(
            key, size=record.size, sha256=record.sha256
        ) as writer:
            async for chunk in self.raw.read(key):
                digest.update(chunk)
                await writer.write(chunk)
            if digest.hexdigest() != record.sha256:  # leaving the block aborts the writer
                raise IntegrityError(
                    f"{self.raw.url}/{key} does not hash to the ledger's sha256: not copied"
                )
            await writer.commit(record.sha256)
        info = await self.target.stat(key)
        if info is None or info.size != record.size:
            raise IntegrityError(f"the copy of {key} has the wrong size after commit")
        if self.options.deep and await _hash(self.target, key) != record.sha256:
            raise IntegrityError(f"the copy of {key} does not hash to the ledger's sha256")


async def _hash(store: Store, key: str) -> str:
    digest = hashlib.sha256()
    async for chunk in store.read(key):
        digest.update(chunk)
    return digest.hexdigest()


# -- the run ------------------------------------------------------------------------------------


async def backup(config: Config, host: Host, options: BackupOptions) -> list[Outcome]:
    """Copy every raw object the ledger knows and the backup store lacks; verify; record."""
    target_url = backup_url(config)
    if _nested(config.store.raw, target_url):
        raise ConfigError(
            f"{config.path.name}: the backup ({target_url}) overlaps the raw store: "
            "set [store] backup or [buckets.names] data-backup"
        )
    stores = [_open_store(config, host, url) for url in (config.store.raw, target_url)]
    logs = _open_store(config, host, config.store.logs)
    raw, target = stores
    try:
        ledger = await open_ledger(logs)
        try:
            todo = ledger.records() if options.recheck else ledger.not_backed_up(target.url)
            if options.dry_run:
                return [Outcome(r.source, r.key, "planned", r.size) for r in todo]
            target.bind_ledger(ledger)
            await target.recover()
            async with _copier(config, raw, target, options) as copier:
                return await _copy_all(copier, todo, ledger, options.concurrency)
        finally:
            await asyncio.shield(_write_back(logs, ledger, options.dry_run))
    finally:
        for store in (*stores, logs):
            await store.close()


async def _write_back(logs: Store, ledger: Ledger, dry_run: bool) -> None:
    try:
        if not dry_run:
            await push_ledger(logs, ledger)
    finally:
        ledger.close()


def _nested(a: str, b: str) -> bool:
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _open_store(config: Config, host: Host, url: str) -> Store:
    scheme = url.split("://", 1)[0]
    defaults = config.defaults
    options = {
        **config.store.connection_options(),
        "retries": defaults.retries,
        "backoff": defaults.backoff,
        "max_backoff": defaults.max_backoff,
    }
    return host.stores()[scheme].open(url, options)


@asynccontextmanager
async def _copier(
    config: Config, raw: Store, target: Store, options: BackupOptions
) -> AsyncIterator[Copier]:
    if not (raw.url.startswith("s3://") and target.url.startswith("s3://")):
        yield StreamCopier(raw, target, options)
        return
    defaults = config.defaults
    retry = RetryPolicy(defaults.retries, defaults.backoff, defaults.max_backoff)
    settings = S3Settings.from_options(config.store.connection_options())
    connections = min(256, options.concurrency * options.part_concurrency + 8)
    async with s3_client(settings, max_connections=connections) as client:
        raw_at, target_at = S3Location.parse(raw.url), S3Location.parse(target.url)
        yield S3Copier(client, raw_at, target_at, options, retry)


async def _copy_all(
    copier: Copier, todo: list[LedgerRecord], ledger: Ledger, concurrency: int
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    pending: Iterator[LedgerRecord] = iter(todo)

    async def worker() -> None:
        for record in pending:  # shared: each record goes to exactly one worker
            outcomes.append(await _one(copier, record, ledger))

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return sorted(outcomes, key=lambda o: (o.source, o.key))


async def _one(copier: Copier, record: LedgerRecord, ledger: Ledger) -> Outcome:
    try:
        status, done = await copier.backup(record)
    except Exception as error:  # one object's failure (a dropped connection…) stops only it
        reason = str(error) if isinstance(error, AstroingestError) else describe(error)
        log.error("backup of %s/%s failed: %s", record.source, record.key, reason)
        return Outcome(record.source, record.key, "failed", record.size, reason)
    await asyncio.to_thread(ledger.backup_put, done)
    log.debug("%s: %s/%s", status, record.source, record.key)
    return Outcome(record.source, record.key, status, record.size)


# -- the command ---------------------------------------------------------------------------------


def add_backup_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    backup = commands.add_parser(
        "backup", parents=[common], help="copy new raw objects to the backup store, verified"
    )
    backup.add_argument("--sources", type=Path, required=True, help="path to sources.toml")
    backup.add_argument("--dry-run", action="store_true", help="list what would be copied")
    backup.add_argument(
        "--recheck",
        action="store_true",
        help="check every asset's copy, not only those the ledger has no copy of",
    )
    backup.add_argument(
        "--deep", action="store_true", help="read every copy back and hash it (slow, costs GETs)"
    )
    backup.add_argument("--concurrency", type=int, default=8, help="objects in flight (default 8)")


def backup_command(config: Config, host: Host, args: argparse.Namespace) -> bool:
    """The CLI command; True when nothing failed."""
    if not 1 <= args.concurrency <= 256:
        raise ConfigError("--concurrency: between 1 and 256")
    options = BackupOptions(
        dry_run=args.dry_run, recheck=args.recheck, deep=args.deep, concurrency=args.concurrency
    )
    outcomes = asyncio.run(backup(config, host, options))
    target = backup_url(config)
    if options.dry_run:
        for o in outcomes:
            print(f"{o.source}/{o.key}  {human_bytes(o.size)}")
        print(f"would copy {len(outcomes)} objects to {target}")
        return True
    _print_summary(outcomes, target)
    return not any(o.status == "failed" for o in outcomes)


def _print_summary(outcomes: list[Outcome], target: str) -> None:
    table = Table(title=f"backup to {target}")
    for column in ("source", "copied", "present", "failed", "bytes copied"):
        table.add_column(column, justify="left" if column == "source" else "right")
    by_source: dict[str, dict[str, int]] = {}
    for o in outcomes:
        counts = by_source.setdefault(
            o.source, dict.fromkeys(("copied", "present", "failed", "bytes"), 0)
        )
        counts[o.status] += 1
        counts["bytes"] += o.size if o.status == "copied" else 0
    for source, c in by_source.items():
        table.add_row(
            source, str(c["copied"]), str(c["present"]), str(c["failed"]), human_bytes(c["bytes"])
        )
    Console(width=120).print(table)
    for o in outcomes:
        if o.status == "failed":
            print(f"failed: {o.source}/{o.key}: {o.error}")
    copied = sum(o.status == "copied" for o in outcomes)
    present = sum(o.status == "present" for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes)
    print(f"backup: {copied} copied, {present} already there, {failed} failed")
