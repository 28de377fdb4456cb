"""Every error astroingest raises on purpose.

The tree::

    AstroingestError
    ├── ConfigError            sources.toml (or train.toml) is wrong; exit status 2
    ├── PluginError            a plugin could not be loaded or used
    │   └── PluginConflictError    two distributions register the same name
    ├── FetchError             one asset could not be fetched
    │   ├── RetryableError         transient: 429, 5xx, truncated body (retried)
    │   ├── HTTPStatusError        permanent: 4xx other than 408/429
    │   └── IntegrityError         size or checksum does not match what was promised
    ├── StoreError             a store could not write, commit or read
    │   └── UnsafeKeyError         a key would escape its prefix
    └── ValidationError        a body is not what its media type says

Messages never contain secrets: the engine passes them through its redactor
before they reach a log, a report or the terminal.
"""

from __future__ import annotations


class AstroingestError(Exception):
    """Base of every error astroingest raises on purpose."""


class ConfigError(AstroingestError):
    """The configuration file is invalid; the message is one line naming file, source and field."""


class PluginError(AstroingestError):
    """A plugin could not be loaded or registered."""


class PluginConflictError(PluginError):
    """Two plugins register the same source type, store scheme or validator name."""


class FetchError(AstroingestError):
    """An asset could not be fetched."""


class RetryableError(FetchError):
    """A transient failure worth another attempt.

    ``retry_after`` is the server's Retry-After in seconds, when it sent one; for an
    HTTP status, ``status_code`` and the first 64 KiB of the error ``body`` are kept.
    """

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        status_code: int | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status_code = status_code
        self.body = body


class HTTPStatusError(FetchError):
    """The server answered with a status that another attempt will not change.

    ``body`` holds the first 64 KiB of the error body: archives explain themselves there.
    """

    def __init__(self, message: str, status_code: int, body: bytes = b"") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class IntegrityError(RetryableError):
    """The body's size or checksum differs from what the server or the archive promised."""


class StoreError(AstroingestError):
    """A store could not write, commit or read an object."""


class UnsafeKeyError(StoreError):
    """A key would escape the prefix it belongs to."""


class ValidationError(AstroingestError):
    """A body failed validation."""
