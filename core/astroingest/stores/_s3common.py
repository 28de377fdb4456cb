"""What every S3 user in astroingest shares: URL parsing, the client, error classification.

aioboto3 is imported lazily (it costs most of a second): only runs that touch S3 pay.
Credentials come only from the standard AWS chain (environment, shared profile,
instance or container role); the endpoint from ``[store] endpoint_url`` or the
standard ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from astroingest._exceptions import RetryableError, StoreError

# Errors S3 (and S3-compatible servers) return when trying again can help.
RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "500",
        "502",
        "503",
        "504",
    }
)


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b/" (always ending in "/")

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"not an s3://bucket[/prefix] URL: {url!r}")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")

    def key(self, name: str) -> str:
        return self.prefix + name.lstrip("/")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Connection settings from the ``[store]`` table (never credentials)."""

    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> S3Settings:
        endpoint = options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        return cls(endpoint or None, options.get("region") or None)


@asynccontextmanager
async def s3_client(settings: S3Settings, max_connections: int = 32) -> AsyncIterator[Any]:
    """An aiobotocore S3 client. botocore's own retries are off: ours apply (``call``)."""
    try:
        import aioboto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise StoreError("s3:// stores need the s3 extra: pip install 'astroingest[s3]'") from None
    session = aioboto3.Session()
    config = BotoConfig(
        retries={"max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_connections,
        # Checksums only where we ask for them: we send SHA-256 ourselves.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    async with session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=config,
    ) as client:
        yield client


def error_code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    if code:
        return str(code)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status) if status else None


def classify(error: BaseException, bucket: str, action: str) -> Exception:
    """Turn a botocore/aiohttp failure into RetryableError or a StoreError naming the bucket.

    The message names the bucket and the S3 error code, never credentials or signed URLs.
    """
    code = error_code(error)
    if code is None:
        name = type(error).__name__
        if _is_connection_error(error):
            return RetryableError(f"S3 {action} on bucket {bucket!r}: connection failed ({name})")
        return StoreError(f"S3 {action} on bucket {bucket!r} failed: {name}")
    if code in RETRYABLE_CODES:
        return RetryableError(f"S3 {action} on bucket {bucket!r}: {code}")
    hint = _HINTS.get(code, "")
    return StoreError(f"S3 {action} on bucket {bucket!r} failed: {code}{hint}")


async def s3_request(
    client: Any, action: str, *, absent: tuple[str, ...] = (), **kwargs: Any
) -> Any:
    """One S3 request by its API name ("HeadObject"), failures classified (``classify``).

    Error codes listed in ``absent`` (a missing key, no such configuration) return None.
    """
    method = re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()
    try:
        return await getattr(client, method)(**kwargs)
    except Exception as error:
        if absent and error_code(error) in absent:
            return None
        raise classify(error, str(kwargs.get("Bucket", "?")), action) from None


_HINTS = {
    "NoSuchBucket": " (create it with `astroingest buckets create`)",
    "AccessDenied": " (the credentials in use may not write to this bucket)",
    "InvalidAccessKeyId": " (the access key is not known to this endpoint)",
    "SignatureDoesNotMatch": " (the secret key does not match the access key)",
    "AllAccessDisabled": " (the bucket is disabled)",
}


def _is_connection_error(error: BaseException) -> bool:
    try:
        from botocore.exceptions import (
            ConnectionClosedError,
            EndpointConnectionError,
            ReadTimeoutError,
        )
    except ImportError:  # pragma: no cover - botocore comes with the s3 extra
        return isinstance(error, OSError | TimeoutError)
    connection = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)
    return isinstance(error, (*connection, OSError, TimeoutError))
