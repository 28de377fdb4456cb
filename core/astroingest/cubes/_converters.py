"""Converters: what turns one raw asset into rows of a cube. Registered through a hook."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astroingest.cubes._spec import CubeSpec
    from astroingest.cubes._writer import CubeWriter


@dataclass(frozen=True, slots=True)
class ConvertInput:
    """One raw asset, on local disk for the converter to read."""

    path: Path
    source: str
    key: str
    sha256: str
    spec: CubeSpec

    @property
    def name(self) -> str:
        return f"{self.source}/{self.key}"


Convert = Callable[[ConvertInput, "CubeWriter"], None]


@dataclass(frozen=True, slots=True)
class ConverterType:
    """A converter registered through ``astroingest_converters``.

    ``convert(item, writer)`` reads ``item.path`` and calls ``writer.append(batch)`` with
    arrays whose first axis is the sample dimension (``sample_dim`` unless the cube's
    table sets another). It runs in a worker thread; it may block. ``extensions`` are
    the asset keys it takes (lower case, with the dot); other assets of the cube's
    sources are left out.
    """

    name: str
    convert: Convert
    extensions: Sequence[str]
    sample_dim: str
    description: str = ""
    grows: Sequence[str] = ()  # other dimensions its arrays grow along (flat residues…)
    # Samples ordered by their coordinate (time): inputs are converted in the order
    # ``order(path)`` gives, and an input with earlier steps rebuilds the cube in order.
    order: Callable[[Path], Any] | None = None

    def accepts(self, key: str) -> bool:
        lowered = key.lower()
        return any(lowered.endswith(ext) for ext in self.extensions)
