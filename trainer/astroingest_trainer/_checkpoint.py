"""Checkpoints in a store (local or S3): streamed up, never half visible, found again.

Each checkpoint is one object, ``step-<step>.pt`` (``torch.save`` output, streamed to the
store as it is written: no local copy, multipart on S3). It becomes visible only when
complete (the store's commit). Only then is ``latest.json`` rewritten to point at it,
with its sha256; then checkpoints beyond ``keep`` are deleted, oldest first. A crash at
any moment therefore leaves ``latest.json`` naming a complete checkpoint, the previous
one until the new one is whole. Loading checks the sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass
from typing import IO, Any, cast

import torch

from astroingest._exceptions import StoreError
from astroingest_trainer import _storeio

POINTER = "latest.json"
NAME = re.compile(r"^step-(\d{10})\.pt$")


@dataclass(frozen=True, slots=True)
class Pointer:
    step: int
    key: str
    sha256: str | None = None  # None: found by listing, without a pointer
    size: int | None = None


def checkpoint_key(step: int) -> str:
    return f"step-{step:010d}.pt"


class CheckpointStore:
    def __init__(self, url: str, options: dict[str, Any], keep: int = 3) -> None:
        self.url = url
        self.keep = keep
        self.store = _storeio.open_store(url, options)

    def save(self, step: int, state: dict[str, Any]) -> Pointer:
        key = checkpoint_key(step)
        with _storeio.UploadStream(self.store, key) as out:
            torch.save(state, cast(IO[bytes], out))
            sha256 = out.commit()
        pointer = Pointer(step, key, sha256, out.size)
        _storeio.put_bytes(self.store, POINTER, json.dumps(asdict(pointer)).encode())
        self._prune(step)
        return pointer

    def latest(self) -> Pointer | None:
        """The checkpoint ``latest.json`` names, or the newest one listed when there is no
        pointer yet (a crash between the first checkpoint and its pointer)."""
        if _storeio.stat(self.store, POINTER) is not None:
            data = json.loads(_storeio.read_bytes(self.store, POINTER))
            return Pointer(
                int(data["step"]), str(data["key"]), data.get("sha256"), data.get("size")
            )
        steps = self.steps()
        return Pointer(steps[-1], checkpoint_key(steps[-1])) if steps else None

    def steps(self) -> list[int]:
        found = []
        for info in _storeio.list_objects(self.store, "step-"):
            match = NAME.match(info.key)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def load(self, pointer: Pointer) -> dict[str, Any]:
        data = _storeio.read_bytes(self.store, pointer.key)
        if pointer.sha256 and hashlib.sha256(data).hexdigest() != pointer.sha256:
            raise StoreError(f"checkpoint {self.url}/{pointer.key} does not match its sha256")
        state: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return state

    def clean_partial(self) -> int:
        """Remove what saves killed mid-way left behind (temp files, multipart uploads)."""
        from astroingest.stores.s3 import S3Store

        if isinstance(self.store, S3Store):
            return _storeio.run(_abort_uploads(self.store))
        return _storeio.run(self.store.recover())

    def _prune(self, newest: int) -> None:
        old = [s for s in self.steps() if s < newest]
        for step in old[: max(0, len(old) - (self.keep - 1))]:
            _storeio.delete(self.store, checkpoint_key(step))


async def _abort_uploads(store: Any) -> int:
    """Abort the unfinished multipart uploads under the checkpoint prefix: only the one
    process that saves runs this, before it saves, so none of them is still going."""
    page = await store.call(
        "ListMultipartUploads", "list_multipart_uploads", Prefix=store.location.prefix
    )
    prefix = store.location.prefix
    uploads = [u for u in page.get("Uploads", []) if NAME.match(u["Key"][len(prefix) :])]
    for upload in uploads:
        await store.abort_upload(upload["Key"], upload["UploadId"])
    return len(uploads)
