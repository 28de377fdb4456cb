"""``[cubes.NAME]`` tables of sources.toml: which sources feed a cube, and how it is laid out."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CubeSpec(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)

    from_: list[str] = Field(alias="from", min_length=1)  # source names
    converter: str
    variables: list[str] | None = None  # default: every variable the converter finds
    sample_dim: str | None = None  # default: the converter's (time, row, record)
    chunks: dict[str, int] = {}  # per dimension; default about 4 MiB per chunk
    shards: dict[str, int] = {}  # per dimension; chunks are grouped into shard objects
    codec: Literal["zstd", "blosc"] = "zstd"
    level: int = Field(default=3, ge=1, le=22)
    window: int = Field(default=1, ge=1)  # samples: windows of this many steps…
    stride: int = Field(default=1, ge=1)  # …starting this many steps apart
    enabled: bool = True
