"""The training manifest: everything a trainer needs to know about one cube version.

Written with every cube version, inside the same Icechunk commit (root group attribute
``training_manifest``), so a reader always gets the manifest of exactly the data it
sees. The trainer's only input besides the cube itself.

Samples are windows along one dimension (``sample_dim``): window ``i`` covers
``[i * stride, i * stride + window)``; ``count`` windows in all. A sample of variable
``v`` is ``v[start:stop]`` along that dimension, whole along the others.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from astroingest.cubes._stats import Stats

FORMAT = "astroingest-training-manifest"
VERSION = 1
ATTRIBUTE = "training_manifest"


@dataclass(frozen=True, slots=True)
class VariableInfo:
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    stats: Stats
    attrs: dict[str, Any] = field(default_factory=dict)  # units, long_name, description…

    def as_dict(self) -> dict[str, Any]:
        return {
            "dims": list(self.dims),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "chunks": list(self.chunks),
            "stats": self.stats.as_dict(),
            "attrs": self.attrs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariableInfo:
        return cls(
            tuple(data["dims"]),
            tuple(int(n) for n in data["shape"]),
            str(data["dtype"]),
            tuple(int(n) for n in data["chunks"]),
            Stats.from_dict(data["stats"]),
            dict(data.get("attrs", {})),
        )


@dataclass(frozen=True, slots=True)
class Samples:
    dim: str
    count: int
    window: int = 1
    stride: int = 1

    def bounds(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.count:
            raise IndexError(f"sample {index} of {self.count}")
        start = index * self.stride
        return start, start + self.window

    @classmethod
    def along(cls, dim: str, length: int, window: int = 1, stride: int = 1) -> Samples:
        count = 0 if length < window else (length - window) // stride + 1
        return cls(dim, count, window, stride)


@dataclass(frozen=True, slots=True)
class TrainingManifest:
    cube: str
    converter: str
    version: int  # 1 for the first committed version of the cube, then 2, 3…
    samples: Samples
    variables: dict[str, VariableInfo]
    created_at: str
    inputs: dict[str, str] = field(default_factory=dict)  # "source/key" -> sha256
    provenance: dict[str, Any] = field(default_factory=dict)  # run ids, software version

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": VERSION,
            "cube": self.cube,
            "converter": self.converter,
            "version": self.version,
            "samples": asdict(self.samples),
            "variables": {name: v.as_dict() for name, v in self.variables.items()},
            "created_at": self.created_at,
            "inputs": self.inputs,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingManifest:
        if data.get("format") != FORMAT:
            raise ValueError("not an astroingest training manifest")
        if int(data.get("format_version", 0)) > VERSION:
            raise ValueError(
                f"training manifest format {data['format_version']} is newer than this "
                f"astroingest understands ({VERSION}): upgrade astroingest"
            )
        return cls(
            str(data["cube"]),
            str(data["converter"]),
            int(data["version"]),
            Samples(**data["samples"]),
            {name: VariableInfo.from_dict(v) for name, v in data["variables"].items()},
            str(data["created_at"]),
            dict(data.get("inputs", {})),
            dict(data.get("provenance", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> TrainingManifest:
        return cls.from_dict(json.loads(text))
