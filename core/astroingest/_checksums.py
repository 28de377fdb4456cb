"""Checksums computed while streaming, and the archive's published ones verified."""

from __future__ import annotations

import hashlib
from typing import Protocol

from astroingest._assets import Asset
from astroingest._exceptions import FetchError, IntegrityError


class Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def hexdigest(self) -> str: ...


def new_hasher(algorithm: str) -> Hasher:
    name = algorithm.lower().replace("-", "")
    if name == "blake3":
        from blake3 import blake3  # imported here: only Copernicus publishes BLAKE3

        return blake3()
    try:
        return hashlib.new(name, usedforsecurity=False)
    except ValueError:
        raise FetchError(f"unknown checksum algorithm {algorithm!r}") from None


class Digests:
    """sha256 always; every algorithm the archive published a value for, too."""

    def __init__(self, asset: Asset) -> None:
        expected = {k.lower().replace("-", ""): v.lower() for k, v in asset.checksums.items()}
        if asset.sha256:
            expected["sha256"] = asset.sha256.lower()
        if asset.md5:
            expected["md5"] = asset.md5.lower()
        self.expected = expected
        self.hashers: dict[str, Hasher] = {"sha256": hashlib.sha256()}
        for algorithm in expected:
            if algorithm not in self.hashers:
                self.hashers[algorithm] = new_hasher(algorithm)
        self._all = list(self.hashers.values())

    def update(self, chunk: bytes) -> None:
        for hasher in self._all:
            hasher.update(chunk)

    @property
    def sha256(self) -> str:
        return self.hashers["sha256"].hexdigest()

    def verify(self) -> None:
        for algorithm, want in self.expected.items():
            got = self.hashers[algorithm].hexdigest()
            if got != want:
                raise IntegrityError(f"{algorithm} mismatch: got {got}, expected {want}")
