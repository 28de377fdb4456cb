"""``astroingest doctor``: is this setup ready to run? One row per check, with what to do.

Checked: the configuration; each source's credentials (variable names only, never
values); every store, by writing, reading back and deleting a small probe object (S3:
each bucket, the probe version deleted too); the plugins, broken ones named; the
optional extras; and whatever checks plugins add through ``astroingest_doctor_checks``.
Checks that call the archives run only with ``--online``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import re
import tomllib
import uuid
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from astroingest._buckets import backup_url, role_buckets
from astroingest._config import Config, load_config
from astroingest._exceptions import AstroingestError, ConfigError
from astroingest._http import Timeouts, make_client
from astroingest._interpolate import environment_for
from astroingest._plugins import DISABLE_ENV, Host
from astroingest._redact import Redactor
from astroingest.doctor import CheckState, DoctorCheck, DoctorContext
from astroingest.stores._s3common import S3Location, S3Settings, s3_client, s3_request

CHECK_TIMEOUT = 30.0  # seconds per check: a black-holed endpoint must not hang the report
PROBE = b"astroingest doctor: a probe object, deleted right after it is read back\n"
VARIABLE = r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}"
EXTRAS = {
    "s3": (("aioboto3",), "s3:// stores"),
    "cubes": (("zarr", "numcodecs", "xarray", "h5netcdf", "h5py"), "Zarr cubes"),
    "train": (("torch", "zarr"), "training"),
    "dask": (("dask", "distributed"), "dask clusters"),
}


@dataclass(frozen=True, slots=True)
class Row:
    check: str
    state: CheckState
    detail: str
    fix: str = ""


async def diagnose(path: Path, host: Host, *, online: bool) -> list[Row]:
    """Every check, in order: config, credentials, plugins, extras, stores, plugin checks."""
    config, rows = _load(path, host)
    credentials, unresolved = _credentials(path)
    rows += credentials
    checks = host.doctor_checks()  # before the plugin rows: a hook that raises is broken
    rows += _plugins(host)
    rows += _extras(config)
    if config is None:
        rows.append(Row("stores", "skip", "not checked: the configuration does not load"))
        return rows
    rows += await _stores(config, host)
    rows += await _plugin_checks(checks, config, online, unresolved)
    # Secrets out of every line, as `run` scrubs its logs and reports; an undefined
    # variable's own "${NAME}", kept as written, is a name, not a secret.
    redact = Redactor(s for s in config.secrets if not re.fullmatch(VARIABLE, s))
    return [Row(r.check, r.state, redact(r.detail), redact(r.fix)) for r in rows]


# -- configuration and credentials ---------------------------------------------------------


def _load(path: Path, host: Host) -> tuple[Config | None, list[Row]]:
    try:
        config = load_config(path, host)
    except ConfigError as error:
        row = Row(
            "config",
            "fail",
            str(error),
            f"correct it (`astroingest check --sources {path}` gives the same line)",
        )
        try:  # undefined variables only? then the stores can still be checked
            return load_config(path, host, keep_undefined=True), [row]
        except ConfigError:
            return None, [row]
    enabled = sum(s.config.enabled for s in config.sources.values())
    detail = f"{path.name}: valid, {len(config.sources)} sources ({enabled} enabled)"
    return config, [Row("config", "pass", detail)]


def _credentials(path: Path) -> tuple[list[Row], frozenset[str]]:
    """Per source, the ``${VAR}`` it names and whether each is set: names, never values."""
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("sources", {})
        env = environment_for(path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return [], frozenset()  # the config row has said why
    rows: list[Row] = []
    unresolved: set[str] = set()
    for name, table in tables.items() if isinstance(tables, dict) else ():
        names = sorted({m for m in re.findall(VARIABLE, _strings(table)) if m})
        if not names:
            continue
        missing = [n for n in names if n not in env]
        enabled = not (isinstance(table, dict) and table.get("enabled") is False)
        if missing:
            unresolved.add(name)
        rows.append(_credential_row(path, name, names, missing, enabled))
    return rows, frozenset(unresolved)


def _credential_row(
    path: Path, source: str, names: list[str], missing: list[str], enabled: bool
) -> Row:
    check = f"credentials {source}"
    if not enabled:
        state = "missing " + ", ".join(missing) if missing else "all set"
        return Row(check, "skip", f"source disabled ({', '.join(names)}: {state})")
    if missing:
        return Row(
            check,
            "fail",
            f"not set: {', '.join(missing)}",
            f"set {', '.join(missing)} in the environment or in {path.parent / '.env'}",
        )
    return Row(check, "pass", f"set: {', '.join(names)}")


def _strings(value: Any) -> str:
    if isinstance(value, str):
        return value + "\n"
    if isinstance(value, dict):
        return "".join(_strings(v) for v in value.values())
    if isinstance(value, list):
        return "".join(_strings(v) for v in value)
    return ""


# -- plugins and extras ------------------------------------------------------------------


def _plugins(host: Host) -> list[Row]:
    builtin = sum(info.builtin for info in host.infos.values())
    third = len(host.infos) - builtin
    rows = [Row("plugins", "pass", f"{builtin} built-in and {third} third-party plugins loaded")]
    for broken in host.broken:
        rows.append(
            Row(
                f"plugin {broken.name}",
                "fail",
                f"broken, skipped: {broken.distribution}: {broken.error}",
                f"upgrade or reinstall {broken.distribution}, or skip it: "
                f"{DISABLE_ENV}={broken.name}",
            )
        )
    return rows


def _extras(config: Config | None) -> list[Row]:
    urls = _store_urls(config) if config is not None else {}
    needed = {"s3"} if any(url.startswith("s3://") for url in urls) else set()
    rows = []
    for extra, (modules, purpose) in EXTRAS.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        install = f"pip install 'astroingest[{extra}]'"
        if not missing:
            rows.append(Row(f"extra {extra}", "pass", f"installed ({purpose})"))
        elif extra in needed:
            rows.append(
                Row(
                    f"extra {extra}", "fail", f"needed for {purpose}; missing {missing[0]}", install
                )
            )
        else:
            rows.append(Row(f"extra {extra}", "skip", f"not installed ({purpose}): {install}"))
    return rows


# -- stores ---------------------------------------------------------------------------------


def _store_urls(config: Config) -> dict[str, list[str]]:
    """Every store URL the configuration uses, with the roles it plays."""
    urls: dict[str, list[str]] = {}
    store = config.store
    roles = {"raw": store.raw, "cubes": store.cubes, "logs": store.logs}
    roles["quarantine"] = config.quarantine_url
    if store.backup is not None:
        roles["backup"] = store.backup
    for role, url in roles.items():
        urls.setdefault(url, []).append(role)
    return urls


async def _stores(config: Config, host: Host) -> list[Row]:
    rows: list[Row] = []
    buckets: dict[str, tuple[str, list[str]]] = {}  # bucket: (a prefix to probe, roles)
    for url, roles in _store_urls(config).items():
        if url.startswith("s3://"):
            location = S3Location.parse(url)
            buckets.setdefault(location.bucket, (location.prefix, []))[1].extend(roles)
        else:
            rows.append(await _timed(f"store {url}", roles, _probe_store(config, host, url)))
    if config.buckets is not None:
        try:
            for role in role_buckets(config).values():
                buckets.setdefault(role.bucket, (role.prefix, []))[1].append(role.role)
            backup_url(config)
        except ConfigError as error:
            rows.append(Row("buckets", "fail", str(error), "correct [buckets] in the file"))
    if buckets:
        rows += await _probe_buckets(config, buckets)
    return rows


async def _timed(check: str, roles: list[str], probe: Awaitable[str]) -> Row:
    label = ", ".join(dict.fromkeys(roles))
    try:
        detail = await asyncio.wait_for(probe, CHECK_TIMEOUT)
    except TimeoutError:
        return Row(check, "fail", f"{label}: no answer within {CHECK_TIMEOUT:.0f} s", _NETWORK)
    except (AstroingestError, OSError) as error:
        return Row(check, "fail", f"{label}: {error}", _fix_for(str(error)))
    return Row(check, "pass", f"{label}: {detail}")


async def _probe_store(config: Config, host: Host, url: str) -> str:
    scheme = url.split("://", 1)[0]
    options = {**config.store.connection_options(), "retries": 0}
    store = host.stores()[scheme].open(url, options)
    key = f".astroingest-doctor-{uuid.uuid4().hex}"
    try:
        await store.put_bytes(key, PROBE)
        try:
            back = b"".join([chunk async for chunk in store.read(key)])
        finally:
            await store.delete(key)
    finally:
        await store.close()
    if back != PROBE:
        raise AstroingestError("the probe object read back differently")
    return "writable (a probe object written, read back, deleted)"


async def _probe_buckets(config: Config, buckets: dict[str, tuple[str, list[str]]]) -> list[Row]:
    settings = S3Settings.from_options(config.store.connection_options())
    where = settings.endpoint_url or "AWS"
    rows = []
    try:
        async with s3_client(settings) as client:
            for bucket, (prefix, roles) in buckets.items():
                probe = _probe_bucket(client, bucket, prefix)
                rows.append(await _timed(f"bucket {bucket}", roles, probe))
    except AstroingestError as error:  # no s3 extra
        rows.append(Row(f"s3 at {where}", "fail", str(error), "pip install 'astroingest[s3]'"))
    return rows


async def _probe_bucket(client: Any, bucket: str, prefix: str) -> str:
    found = await s3_request(client, "HeadBucket", absent=("404", "NoSuchBucket"), Bucket=bucket)
    if found is None:
        raise AstroingestError(f"bucket {bucket!r} does not exist (NoSuchBucket)")
    key = f"{prefix}.astroingest-doctor-{uuid.uuid4().hex}"
    put = await s3_request(client, "PutObject", Bucket=bucket, Key=key, Body=PROBE)
    # Deleting the very version leaves nothing behind in a versioned bucket either.
    version = {"VersionId": put["VersionId"]} if put.get("VersionId") else {}
    try:
        answer = await s3_request(client, "GetObject", Bucket=bucket, Key=key, **version)
        body = answer["Body"]
        async with body:
            back = await body.read()
    finally:
        await s3_request(client, "DeleteObject", Bucket=bucket, Key=key, **version)
    if back != PROBE:
        raise AstroingestError("the probe object read back differently")
    return "reachable, writable (a probe object written, read back, deleted)"


_NETWORK = "check [store] endpoint_url or AWS_ENDPOINT_URL, and the network"
_FIXES = (
    ("NoSuchBucket", "create it: astroingest buckets create --sources <file>"),
    ("connection failed", _NETWORK),
    (
        "NoCredentialsError",
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "or AWS_PROFILE, or run with an instance role",
    ),
    ("AccessDenied", "allow these credentials s3:PutObject, s3:GetObject, s3:DeleteObject there"),
    ("InvalidAccessKeyId", "check AWS_ACCESS_KEY_ID (the endpoint does not know it)"),
    ("SignatureDoesNotMatch", "check AWS_SECRET_ACCESS_KEY (it does not match the key id)"),
    ("Permission denied", "make the directory writable for this user, or choose another"),
)


def _fix_for(message: str) -> str:
    return next((fix for needle, fix in _FIXES if needle in message), "")


# -- plugins' own checks ---------------------------------------------------------------------


async def _plugin_checks(
    checks: list[tuple[DoctorCheck, str]], config: Config, online: bool, unresolved: frozenset[str]
) -> list[Row]:
    rows: list[Row] = []
    defaults = config.defaults
    async with make_client(Timeouts(defaults.connect_timeout, defaults.read_timeout), 8) as client:
        ctx = DoctorContext(config, online, client, unresolved)
        for check, plugin in checks:
            rows += await _plugin_check(check, plugin, ctx)
    return rows


async def _plugin_check(check: DoctorCheck, plugin: str, ctx: DoctorContext) -> list[Row]:
    try:
        results = await asyncio.wait_for(check.run(ctx), CHECK_TIMEOUT)
    except TimeoutError:
        return [Row(check.name, "fail", f"no result within {CHECK_TIMEOUT:.0f} s", _NETWORK)]
    except Exception as error:  # a plugin's bug is a failed check, not a crashed doctor
        detail = f"the check itself failed: {type(error).__name__}: {error}"
        return [Row(check.name, "fail", detail, f"report it to the authors of {plugin}")]
    return [
        Row(f"{check.name} ({r.subject})" if r.subject else check.name, r.state, r.detail, r.fix)
        for r in results
    ]


# -- the command ------------------------------------------------------------------------------


def add_doctor_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    doctor = commands.add_parser(
        "doctor", parents=[common], help="check that config, credentials, stores and plugins work"
    )
    doctor.add_argument("--sources", type=Path, required=True, help="path to sources.toml")
    doctor.add_argument(
        "--online", action="store_true", help="also ask the archives whether they accept the keys"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")


def doctor_command(args: argparse.Namespace, host: Host, redactor: Redactor) -> bool:
    """The CLI command; True when no check failed."""
    rows = asyncio.run(diagnose(args.sources, host, online=args.online))
    rows = [Row(r.check, r.state, redactor(r.detail), redactor(r.fix)) for r in rows]
    ok = all(row.state != "fail" for row in rows)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(row) for row in rows]}, indent=2))
        return ok
    table = Table("check", "state", "detail", "what to do", title="astroingest doctor")
    for row in rows:
        table.add_row(row.check, _STYLE[row.state], row.detail, row.fix)
    Console(width=160).print(table)
    counts = {state: sum(row.state == state for row in rows) for state in ("pass", "fail", "skip")}
    print(f"doctor: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    return ok


_STYLE = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]"}
