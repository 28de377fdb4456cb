"""sources.toml: parsed strictly, interpolated, validated, resolved — or one clear error line."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from astroingest._bucket_settings import BucketSettings
from astroingest._budget import parse_size
from astroingest._exceptions import ConfigError
from astroingest._hosts import HostOverride
from astroingest._interpolate import UndefinedVariable, environment_for, interpolate
from astroingest._plugins import Host
from astroingest._sources import SourceConfig, SourceType
from astroingest.cubes._spec import CubeSpec

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
SECRET_FIELD = re.compile(
    r"(token|password|passwd|secret|api_?key|credential|authorization|cookie)", re.I
)
DEFAULT_DATA_DIR = "./astroingest-data"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class StoreSettings(_Strict):
    raw: str = f"file://{DEFAULT_DATA_DIR}/raw"
    cubes: str = f"file://{DEFAULT_DATA_DIR}/cubes"
    logs: str = f"file://{DEFAULT_DATA_DIR}/logs"
    quarantine: str | None = None  # default: <logs>/quarantine, never under raw
    backup: str | None = None  # `astroingest backup` copies raw here; never under raw
    endpoint_url: str | None = None
    region: str | None = None
    # S3 multipart: memory per object stays under (parts_in_flight + 1) x part_size.
    part_size: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)
    parts_in_flight: int = Field(default=8, ge=1, le=64)

    def connection_options(self) -> dict[str, Any]:
        """What a store needs besides its URL (never credentials: those come from AWS's chain)."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "part_size": self.part_size,
            "parts_in_flight": self.parts_in_flight,
        }


class Defaults(_Strict):
    concurrency: int = Field(default=16, ge=1, le=1024)
    retries: int = Field(default=5, ge=0, le=20)
    min_quality: float = Field(default=0.95, ge=0, le=1)
    connect_timeout: float = Field(default=30, gt=0, le=600)
    read_timeout: float = Field(default=60, gt=0, le=3600)
    asset_timeout: float = Field(default=6 * 3600, gt=0, le=7 * 24 * 3600)
    backoff: float = Field(default=0.5, ge=0.01, le=60)
    max_backoff: float = Field(default=60, ge=0.01, le=3600)
    host_connections: int = Field(default=8, ge=1, le=256)
    host_rate: float | None = Field(default=None, gt=0, le=1000)
    # Unattended runs: guards per run ("10 GiB" works too), log format, dry-run cost price.
    max_bytes: int | None = Field(default=None, ge=1)
    max_assets: int | None = Field(default=None, ge=1)
    log_format: Literal["text", "json"] = "text"  # json applies when stdout is not a terminal
    storage_price_per_gb_month: float = Field(default=0.023, ge=0, le=1000)  # USD: S3 Standard

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value)


class HostSettings(_Strict):
    connections: int | None = Field(default=None, ge=1, le=256)
    rate: float | None = Field(default=None, gt=0, le=1000)


class _Root(_Strict):
    store: StoreSettings = StoreSettings()
    defaults: Defaults = Defaults()
    hosts: dict[str, HostSettings] = {}
    sources: dict[str, dict[str, Any]] = {}
    buckets: BucketSettings | None = None
    cubes: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    type: SourceType[Any]
    config: SourceConfig


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    store: StoreSettings
    defaults: Defaults
    hosts: dict[str, HostOverride]
    sources: dict[str, Source]
    secrets: frozenset[str] = field(default_factory=frozenset)
    buckets: BucketSettings | None = None  # None: no [buckets] table
    cubes: dict[str, CubeSpec] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def quarantine_url(self) -> str:
        return self.store.quarantine or self.store.logs.rstrip("/") + "/quarantine"


def read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and its TOML tables, or a ConfigError with one line of text."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: not UTF-8 text") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(_toml_line(path.name, text, error)) from None


def load_config(path: Path, host: Host, *, keep_undefined: bool = False) -> Config:
    """Read and validate ``path``; every problem is a ConfigError with one line of text.

    ``keep_undefined`` leaves undefined ``${VAR}`` as written (``doctor`` names them).
    """
    label = path.name
    text, data = read_toml(path)
    secrets: set[str] = set()
    try:
        env = environment_for(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{label}: cannot read {path.parent / '.env'}: {error}") from None
    try:
        lenient = frozenset({()}) if keep_undefined else _disabled(data)
        data = interpolate(data, env, secrets, lenient=lenient)
    except UndefinedVariable as error:
        raise ConfigError(
            f"{label}: {_where(error.where)}: undefined variable ${{{error.name}}} "
            f"(set it in the environment or in {path.parent / '.env'})"
        ) from None
    try:
        root = _Root.model_validate(data)
    except PydanticValidationError as error:
        raise ConfigError(_pydantic_line(label, text, (), error)) from None

    try:
        store = _resolve_store(label, root.store, path.parent, host)
        sources = _resolve_sources(label, text, root.sources, host, secrets)
        cubes = _resolve_cubes(label, text, root.cubes, sources, host)
    except ConfigError as error:
        # The redactor does not know this file's secrets yet: scrub the message here.
        message = str(error)
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:
                message = message.replace(secret, "***")
        raise ConfigError(message) from None
    hosts = {name: HostOverride(name, h.connections, h.rate) for name, h in root.hosts.items()}
    return Config(
        path,
        store,
        root.defaults,
        hosts,
        sources,
        frozenset(secrets),
        buckets=root.buckets,
        cubes=cubes,
    )


def _disabled(data: Mapping[str, Any]) -> frozenset[tuple[str | int, ...]]:
    """Paths of sources written with ``enabled = false``: their variables may be unset."""
    tables = data.get("sources")
    if not isinstance(tables, dict):
        return frozenset()
    return frozenset(
        ("sources", name)
        for name, table in tables.items()
        if isinstance(table, dict) and table.get("enabled") is False
    )


def _resolve_sources(
    label: str,
    text: str,
    tables: Mapping[str, dict[str, Any]],
    host: Host,
    secrets: set[str],
) -> dict[str, Source]:
    types = host.source_types()
    seen: dict[str, str] = {}
    sources: dict[str, Source] = {}
    for name, table in tables.items():
        where = f"[sources.{name}]"
        if not SOURCE_NAME.match(name):
            raise ConfigError(
                f"{label}: {where}: source names are 1-63 letters, digits, '-' or '_', "
                "starting with a letter or digit"
            )
        if name.casefold() in seen:
            raise ConfigError(
                f"{label}: {where}: collides with [sources.{seen[name.casefold()]}] "
                "(source names differing only in case share a prefix on some filesystems)"
            )
        seen[name.casefold()] = name
        plugin = table.get("plugin")
        if not isinstance(plugin, str):
            raise ConfigError(
                f'{label}: {where} plugin: required, a source type name such as "http"'
            )
        if plugin not in types:
            known = ", ".join(sorted(types)) or "none"
            raise ConfigError(
                f"{label}: {where} plugin: unknown source type {plugin!r} (known: {known})"
            )
        source_type = types[plugin]
        try:
            config = source_type.config.model_validate(table)
        except PydanticValidationError as error:
            raise ConfigError(_pydantic_line(label, text, ("sources", name), error)) from None
        secrets |= _secret_values(config)
        sources[name] = Source(name, source_type, config)
    return sources


def _resolve_cubes(
    label: str,
    text: str,
    tables: Mapping[str, dict[str, Any]],
    sources: Mapping[str, Source],
    host: Host,
) -> dict[str, CubeSpec]:
    converters = host.converters()
    cubes: dict[str, CubeSpec] = {}
    for name, table in tables.items():
        where = f"[cubes.{name}]"
        if not SOURCE_NAME.match(name):
            raise ConfigError(
                f"{label}: {where}: cube names are 1-63 letters, digits, '-' or '_', "
                "starting with a letter or digit"
            )
        try:
            spec = CubeSpec.model_validate(table)
        except PydanticValidationError as error:
            raise ConfigError(_pydantic_line(label, text, ("cubes", name), error)) from None
        unknown = [s for s in spec.from_ if s not in sources]
        if unknown:
            raise ConfigError(
                f"{label}: {where} from: no source named {unknown[0]!r} "
                f"(known: {', '.join(sources) or 'none'})"
            )
        if spec.converter not in converters:
            known = ", ".join(sorted(converters)) or "none"
            message = f"unknown converter {spec.converter!r} (known: {known})"
            raise ConfigError(f"{label}: {where} converter: {message}")
        cubes[name] = spec
    return cubes


def _secret_values(config: BaseModel) -> set[str]:
    """Values of keys named like secrets (token, password, Authorization…), at any depth."""
    found: set[str] = set()

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        # token_url names an endpoint, not a secret
        elif (
            isinstance(value, str)
            and value
            and SECRET_FIELD.search(key)
            and not key.endswith("_url")
        ):
            found.add(value)

    walk(config.model_dump(), "")
    return found


def _resolve_store(label: str, settings: StoreSettings, base: Path, host: Host) -> StoreSettings:
    schemes = host.stores()
    resolved: dict[str, str | None] = {}
    for role in ("raw", "cubes", "logs", "quarantine", "backup"):
        url = getattr(settings, role)
        resolved[role] = None if url is None else _resolve_url(label, role, url, base, schemes)
    if settings.endpoint_url is not None and not settings.endpoint_url.startswith(
        ("http://", "https://")
    ):
        raise ConfigError(f"{label}: [store] endpoint_url: must be an http:// or https:// URL")
    raw = resolved["raw"] or ""
    quarantine = resolved["quarantine"] or f"{(resolved['logs'] or '').rstrip('/')}/quarantine"
    for role, url in (("quarantine", quarantine), ("logs", resolved["logs"] or "")):
        if _nested(raw, url):
            raise ConfigError(
                f"{label}: [store] {role}: must not be the raw store or overlap it "
                "(quarantined pages would land among the data)"
            )
    if resolved["backup"] and _nested(raw, resolved["backup"]):
        raise ConfigError(
            f"{label}: [store] backup: must not be the raw store or overlap it "
            "(a backup inside the data it backs up is no backup)"
        )
    return settings.model_copy(update=resolved)


def _nested(a: str, b: str) -> bool:
    """One URL is the other or lies inside it."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _resolve_url(label: str, role: str, url: str, base: Path, schemes: Mapping[str, Any]) -> str:
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme not in schemes:
        known = ", ".join(f"{s}://" for s in sorted(schemes))
        raise ConfigError(f"{label}: [store] {role}: unsupported URL {url!r} (supported: {known})")
    if ".." in parts.path.split("/") or ".." in parts.netloc.split("/"):
        raise ConfigError(f"{label}: [store] {role}: '..' is not allowed in store URLs")
    if parts.query or parts.fragment:
        raise ConfigError(f"{label}: [store] {role}: store URLs take no query or fragment")
    if parts.scheme != "file":
        return url
    rest = url[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    elif parts.netloc not in ("", ".", "..") and not rest.startswith(("./", "/")):
        raise ConfigError(
            f"{label}: [store] {role}: file URLs name a local path "
            "(file:///abs/path or file://./relative), not a host"
        )
    path = Path(rest) if rest.startswith("/") else base / rest
    return path.absolute().as_uri()


def _toml_line(label: str, text: str, error: tomllib.TOMLDecodeError) -> str:
    message = str(error)
    at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if at:
        return f"{label}: line {at.group(1)}: TOML syntax error: {message[: at.start()]}"
    line = max(1, len(text.rstrip("\n").splitlines()))
    return f"{label}: line {line}: TOML syntax error: {message.split(' (at ')[0]} at end of file"


def _where(loc: tuple[str | int, ...]) -> str:
    if not loc:
        return "(top level)"
    head = [str(p) for p in loc[:2]] if loc[0] in ("sources", "cubes") else [str(loc[0])]
    table = "[" + ".".join(head) + "]"
    rest = ".".join(str(p) for p in loc[len(head) :])
    return f"{table} {rest}".strip()


def _pydantic_line(
    label: str, text: str, prefix: tuple[str, ...], error: PydanticValidationError
) -> str:
    first = error.errors()[0]
    loc = (*prefix, *first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    if first["type"] == "missing":
        message = "required"
    line = _line_of(text, loc)
    at = f" (line {line})" if line else ""
    return f"{label}: {_where(loc)}: {message}{at}"


def _line_of(text: str, loc: tuple[str | int, ...]) -> int | None:
    """The line of ``key =`` inside the table that ``loc`` names, if it can be found."""
    strs = [str(p) for p in loc]
    for split in range(len(strs) - 1, 0, -1):
        header = re.compile(
            r"^\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, strs[:split])) + r"\s*\]"
        )
        key = re.compile(r"^\s*" + re.escape(strs[split]) + r"\s*=")
        inside = False
        for number, line in enumerate(text.splitlines(), start=1):
            if line.lstrip().startswith("["):
                inside = bool(header.match(line))
            elif inside and key.match(line):
                return number
    return None
