"""train.toml: parsed strictly (unknown keys are errors), resolved, or one clear error line.

Relative ``file://./…`` URLs are relative to the file, as in sources.toml. The S3
endpoint comes from ``endpoint_url`` in ``[data]``/``[output]`` or ``AWS_ENDPOINT_URL``;
credentials only from the standard AWS chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from astroingest._budget import parse_size
from astroingest._config import _pydantic_line, read_toml
from astroingest._exceptions import ConfigError

SCHEMES = ("file", "s3")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class DataSettings(_Strict):
    cube: str
    inputs: list[str] = Field(min_length=1)
    target: str
    snapshot: str | None = None  # default: the latest version, pinned for the whole run
    endpoint_url: str | None = None
    region: str | None = None
    val_fraction: float = Field(default=0.1, ge=0, lt=1)  # the last blocks, held out
    num_workers: int = Field(default=2, ge=0, le=64)  # DataLoader workers per process
    val_workers: int = Field(default=0, ge=0, le=64)
    start_method: Literal["spawn", "forkserver"] = "spawn"  # Icechunk does not survive fork
    prefetch: int = Field(default=2, ge=0, le=64)  # blocks read ahead per worker
    cache_dir: str | None = None  # a local disk cache of chunks (for S3 cubes)
    cache_size: int = Field(default=20 * 2**30, ge=2**20)

    @field_validator("cache_size", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value)

    @model_validator(mode="after")
    def _target_is_not_an_input(self) -> DataSettings:
        if self.target in self.inputs:
            raise ValueError(f"target {self.target!r} is also an input")
        return self


class TrainSettings(_Strict):
    steps: int = Field(ge=1)  # optimizer steps
    batch_size: int = Field(default=8, ge=1, le=65536)  # per process, per micro-step
    lr: float = Field(default=1e-3, gt=0, le=10)
    checkpoint_every: int = Field(default=100, ge=1)
    grad_accum: int = Field(default=1, ge=1, le=4096)  # micro-steps per optimizer step
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0, le=10)
    grad_clip: float | None = Field(default=1.0, gt=0)
    log_every: int = Field(default=10, ge=1)
    val_every: int | None = Field(default=None, ge=1)  # default: with each checkpoint
    val_batches: int | None = Field(default=None, ge=1)  # default: the whole split
    seed: int = Field(default=0, ge=0)
    deterministic: bool = False  # bitwise-repeatable runs (slower on GPUs)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ModelSettings(_Strict):
    width: int = Field(default=32, ge=1, le=4096)
    depth: int = Field(default=4, ge=0, le=256)  # residual blocks
    kernel: int = Field(default=3, ge=1, le=15)

    @field_validator("kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd (the output keeps the input's grid)")
        return value


class OutputSettings(_Strict):
    checkpoints: str
    logs: str
    endpoint_url: str | None = None
    region: str | None = None
    keep: int = Field(default=3, ge=1, le=1000)  # the newest checkpoints kept
    upload_every: float = Field(default=60, gt=0, le=86400)  # seconds between metric uploads


class _Root(_Strict):
    data: DataSettings
    train: TrainSettings
    model: ModelSettings = ModelSettings()
    output: OutputSettings


@dataclass(frozen=True, slots=True)
class TrainConfig:
    path: Path
    data: DataSettings
    train: TrainSettings
    model: ModelSettings
    output: OutputSettings

    def as_dict(self) -> dict[str, Any]:
        return {
            "data": self.data.model_dump(),
            "train": self.train.model_dump(),
            "model": self.model.model_dump(),
            "output": self.output.model_dump(),
        }

    def store_options(self) -> dict[str, Any]:
        """What the checkpoint and log stores are opened with."""
        return {"endpoint_url": self.output.endpoint_url, "region": self.output.region}


def load_train_config(path: Path) -> TrainConfig:
    label = path.name
    text, data = read_toml(path)
    try:
        root = _Root.model_validate(data)
    except PydanticValidationError as error:
        raise ConfigError(_pydantic_line(label, text, (), error)) from None
    base = path.parent
    data_settings = root.data.model_copy(
        update={
            "cube": resolve_url(label, "[data] cube", root.data.cube, base),
            "cache_dir": _resolve_dir(root.data.cache_dir, base),
        }
    )
    output = root.output.model_copy(
        update={
            "checkpoints": resolve_url(
                label, "[output] checkpoints", root.output.checkpoints, base
            ),
            "logs": resolve_url(label, "[output] logs", root.output.logs, base),
        }
    )
    for where, endpoint in (("[data]", root.data.endpoint_url), ("[output]", output.endpoint_url)):
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{label}: {where} endpoint_url: must be an http:// or https:// URL")
    return TrainConfig(path, data_settings, root.train, root.model, output)


def resolve_url(label: str, where: str, url: str, base: Path) -> str:
    """An absolute store URL: ``file://./x`` is made relative to ``base``."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"{label}: {where}: unsupported URL {url!r} (file:// or s3://)")
    if ".." in parts.path.split("/") or parts.query or parts.fragment:
        raise ConfigError(f"{label}: {where}: no '..', query or fragment in store URLs")
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"{label}: {where}: s3:// URLs name a bucket: s3://bucket/prefix")
        return url.rstrip("/")
    rest = url[len("file://") :]
    if not rest.startswith(("/", "./")) and rest not in (".",):
        raise ConfigError(
            f"{label}: {where}: file URLs name a local path (file:///abs or file://./relative)"
        )
    path = Path(rest) if rest.startswith("/") else base / rest
    return path.absolute().as_uri()


def _resolve_dir(directory: str | None, base: Path) -> str | None:
    if directory is None:
        return None
    path = Path(directory).expanduser()
    return str(path if path.is_absolute() else (base / path).absolute())
