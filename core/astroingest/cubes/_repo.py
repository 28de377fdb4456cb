"""Where a cube lives: an Icechunk repository on local disk or S3, opened the same way.

Icechunk gives every cube transactional, versioned commits: a reader sees a committed
snapshot or the one before, never a half-written one, and every snapshot stays readable.
On local disk Icechunk does not guard against two committers at once, so commits there
are serialised with a file lock beside the repository; on S3 Icechunk's conditional
writes detect the conflict.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astroingest._exceptions import StoreError
from astroingest.cubes._manifest import ATTRIBUTE, TrainingManifest
from astroingest.stores._s3common import S3Location
from astroingest.stores.local import path_from_url

if TYPE_CHECKING:
    import icechunk


@dataclass(frozen=True, slots=True)
class CubeLocation:
    """A cube's URL (``file:///…/cubes/NAME`` or ``s3://bucket/prefix/NAME``) and endpoint."""

    url: str
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def join(cls, store_url: str, name: str, **options: Any) -> CubeLocation:
        return cls(
            f"{store_url.rstrip('/')}/{name}", options.get("endpoint_url"), options.get("region")
        )

    @property
    def local_path(self) -> Path | None:
        return path_from_url(self.url) if self.url.startswith("file://") else None


def _icechunk() -> Any:
    try:
        import icechunk
    except ImportError:
        raise StoreError("cubes need the cubes extra: pip install 'astroingest[cubes]'") from None
    return icechunk


def storage(location: CubeLocation) -> icechunk.Storage:
    ic = _icechunk()
    path = location.local_path
    if path is not None:
        local: icechunk.Storage = ic.local_filesystem_storage(str(path))
        return local
    if not location.url.startswith("s3://"):
        raise StoreError(f"cubes live on file:// or s3:// stores, not {location.url!r}")
    where = S3Location.parse(location.url)
    endpoint = (
        location.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )
    remote: icechunk.Storage = ic.s3_storage(
        bucket=where.bucket,
        prefix=where.prefix.rstrip("/") or None,
        region=location.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint_url=endpoint,
        allow_http=bool(endpoint and endpoint.startswith("http://")),
        force_path_style=bool(endpoint),
        from_env=True,
    )
    return remote


def open_repository(location: CubeLocation, create: bool = False) -> icechunk.Repository:
    ic = _icechunk()
    store = storage(location)
    try:
        repo: icechunk.Repository = (
            ic.Repository.open_or_create(store) if create else ic.Repository.open(store)
        )
    except Exception as error:  # icechunk raises its own types, from Rust
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StoreError(f"cannot open the cube at {location.url}: {message}") from None
    return repo


@contextmanager
def commit_lock(location: CubeLocation) -> Iterator[None]:
    """Serialise committers of one cube on local disk (Icechunk's S3 backend needs none)."""
    path = location.local_path
    if path is None:
        with nullcontext():
            yield
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f".{path.name}.lock"))):
        yield


def read_manifest(
    location: CubeLocation, snapshot: str | None = None
) -> tuple[TrainingManifest, Any]:
    """The manifest of the latest version on ``main`` (or of ``snapshot``), and its session.

    The session is read-only and pinned to that snapshot: open the data through
    ``session.store`` to read exactly what the manifest describes.
    """
    import zarr

    repo = open_repository(location)
    session = (
        repo.readonly_session(snapshot_id=snapshot)
        if snapshot
        else repo.readonly_session(branch="main")
    )
    group = zarr.open_group(session.store, mode="r")
    document = group.attrs.get(ATTRIBUTE)
    if not isinstance(document, dict):
        raise StoreError(f"{location.url}: no training manifest (not a cube astroingest wrote)")
    return TrainingManifest.from_dict(document), session
