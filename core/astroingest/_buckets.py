"""``astroingest buckets create|status``: the four S3 buckets, set up as ``[buckets]`` says.

Each role has one bucket: the bucket of its ``[store]`` URL when that is s3://, else an
explicit ``[buckets.names]`` entry, else the template. Every setting is read before it is
written, so ``create`` changes only what differs (run twice, the second run changes
nothing), and ``status`` compares the same readings with what is expected.

Lifecycle and replication rules are ours when their ID starts with ``astroingest-``;
rules anyone else added are kept as they are.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import json
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from astroingest._bucket_settings import BUCKET_NAME_RULES, ROLES, BucketSettings, valid_bucket_name
from astroingest._config import Config
from astroingest._exceptions import ConfigError, StoreError
from astroingest.stores._s3common import S3Location, S3Settings, s3_client, s3_request

STORE_OF_ROLE = {
    "data-primary": "raw",
    "zarr-cubes": "cubes",
    "data-backup": "backup",
    "logs-metadata": "logs",
}
OURS = "astroingest-"
REPLICATION_RULE = OURS + "backup"
NOT_FOUND = ("404", "NoSuchBucket")
NO_LIFECYCLE = ("NoSuchLifecycleConfiguration",)
NO_REPLICATION = ("ReplicationConfigurationNotFoundError",)
NO_ENCRYPTION = ("ServerSideEncryptionConfigurationNotFoundError",)
NO_PUBLIC_ACCESS_BLOCK = ("NoSuchPublicAccessBlockConfiguration",)
PUBLIC_ACCESS_FLAGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)

State = Literal["ok", "drift", "skipped"]


# -- which bucket serves which role -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoleBucket:
    role: str
    bucket: str
    prefix: str  # where the role's objects live in the bucket: "" or "a/b/"


def role_buckets(config: Config) -> dict[str, RoleBucket]:
    """The bucket of each of the four roles; ConfigError when one cannot be named."""
    settings = config.buckets or BucketSettings()
    found: dict[str, RoleBucket] = {}
    for role in ROLES:
        url = getattr(config.store, STORE_OF_ROLE[role])
        explicit = settings.names.of(role)
        if url is not None and url.startswith("s3://"):
            location = S3Location.parse(url)
            if explicit is not None and explicit != location.bucket:
                raise ConfigError(
                    f"{config.path.name}: [buckets.names] {role}: {explicit!r}, but [store] "
                    f"{STORE_OF_ROLE[role]} is in bucket {location.bucket!r} (keep one of them)"
                )
            found[role] = RoleBucket(role, location.bucket, location.prefix)
            continue
        # Without its own URL the backup mirrors raw's keys, as S3 replication does.
        prefix = found["data-primary"].prefix if role == "data-backup" else ""
        name = explicit or _from_template(config, settings, role)
        found[role] = RoleBucket(role, name, prefix)
    return found


def backup_url(config: Config) -> str:
    """Where ``astroingest backup`` copies raw: ``[store] backup``, else the backup bucket."""
    if config.store.backup is not None:
        return config.store.backup
    backup = role_buckets(config)["data-backup"]
    return f"s3://{backup.bucket}/{backup.prefix}".rstrip("/")


def _from_template(config: Config, settings: BucketSettings, role: str) -> str:
    label = config.path.name
    fields = {f for _, f, _, _ in string.Formatter().parse(settings.template) if f}
    if "date" in fields and settings.date is None:
        where = "[buckets] date" if config.buckets is not None else "[buckets]"
        raise ConfigError(
            f"{label}: {where}: required to name the {role} bucket from the template "
            f'{settings.template!r}: write the day you first create them (date = "YYYYMMDD") '
            "and keep it"
        )
    name = settings.template.format(role=role, date=settings.date)
    if not valid_bucket_name(name):
        raise ConfigError(
            f"{label}: [buckets] template: gives {name!r} for {role}, not a valid S3 bucket "
            f"name ({BUCKET_NAME_RULES})"
        )
    return name


# -- what each bucket should look like ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One setting of one bucket: what is expected against what the server has."""

    setting: str
    expected: str
    actual: str
    state: State


@dataclass(frozen=True, slots=True)
class Rule:
    """A lifecycle rule, in the few terms we set (and compare)."""

    id: str
    prefix: str
    transitions: tuple[tuple[int, str], ...] = ()
    expire_days: int = 0
    noncurrent_expire_days: int = 0
    abort_days: int = 0
    enabled: bool = True

    def to_s3(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "ID": self.id,
            "Status": "Enabled" if self.enabled else "Disabled",
            "Filter": {"Prefix": self.prefix},
        }
        if self.transitions:
            rule["Transitions"] = [{"Days": d, "StorageClass": c} for d, c in self.transitions]
        if self.expire_days:
            rule["Expiration"] = {"Days": self.expire_days}
        if self.noncurrent_expire_days:
            rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": self.noncurrent_expire_days}
        if self.abort_days:
            rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": self.abort_days}
        return rule

    @classmethod
    def from_s3(cls, rule: dict[str, Any]) -> Rule:
        return cls(
            str(rule.get("ID", "")),
            _prefix_of(rule),
            tuple(
                (int(t.get("Days", -1)), str(t["StorageClass"]))
                for t in rule.get("Transitions", [])
            ),
            int(rule.get("Expiration", {}).get("Days", 0)),
            int(rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays", 0)),
            int(rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation", 0)),
            rule.get("Status") == "Enabled",
        )

    def describe(self) -> str:
        parts = [f"{c} after {d} d" for d, c in self.transitions]
        if self.expire_days:
            parts.append(f"expire after {self.expire_days} d")
        if self.noncurrent_expire_days:
            parts.append(f"old versions expire after {self.noncurrent_expire_days} d")
        if self.abort_days:
            parts.append(f"abort unfinished uploads after {self.abort_days} d")
        state = "" if self.enabled else " (disabled)"
        return f"{self.prefix or 'all'}: {', '.join(parts)}{state}"


def _prefix_of(rule: dict[str, Any]) -> str:
    found = rule.get("Filter", {})
    prefix = found.get("Prefix", found.get("And", {}).get("Prefix", rule.get("Prefix", "")))
    return str(prefix or "")


class Setting(abc.ABC):
    """One kind of bucket setting: read it, compare it, write it."""

    late = False  # replication goes after every bucket exists and is versioned

    @abc.abstractmethod
    async def inspect(self, client: Any, bucket: str) -> list[Finding]: ...

    @abc.abstractmethod
    async def apply(self, client: Any, bucket: str) -> None: ...


class Versioning(Setting):
    async def inspect(self, client: Any, bucket: str) -> list[Finding]:
        answer = await s3_request(client, "GetBucketVersioning", Bucket=bucket)
        actual = answer.get("Status") or "never enabled"
        return [Finding("versioning", "Enabled", actual, _ok(actual == "Enabled"))]

    async def apply(self, client: Any, bucket: str) -> None:
        await s3_request(
            client,
            "PutBucketVersioning",
            Bucket=bucket,
            VersioningConfiguration={"Status": "Enabled"},
        )


@dataclass(frozen=True, slots=True)
class Encryption(Setting):
    algorithm: str  # "AES256" (SSE-S3) or "aws:kms"
    key_id: str | None

    async def inspect(self, client: Any, bucket: str) -> list[Finding]:
        answer = await s3_request(
            client, "GetBucketEncryption", absent=NO_ENCRYPTION, Bucket=bucket
        )
        rules = (answer or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
        actual = (default.get("SSEAlgorithm"), default.get("KMSMasterKeyID"))
        expected = (self.algorithm, self.key_id)
        return [
            Finding(
                "encryption",
                _describe_encryption(*expected),
                _describe_encryption(*actual),
                _ok(actual == expected),
            )
        ]

    async def apply(self, client: Any, bucket: str) -> None:
        default: dict[str, str] = {"SSEAlgorithm": self.algorithm}
        if self.key_id is not None:
            default["KMSMasterKeyID"] = self.key_id
        rule: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": default}
        if self.algorithm == "aws:kms":
            rule["BucketKeyEnabled"] = True  # one KMS call per bucket key, not per object
        await s3_request(
            client,
            "PutBucketEncryption",
            Bucket=bucket,
            ServerSideEncryptionConfiguration={"Rules": [rule]},
        )


def _describe_encryption(algorithm: str | None, key_id: str | None) -> str:
    if algorithm is None:
        return "none"
    if algorithm == "AES256":
        return "SSE-S3 (AES256)"
    if algorithm == "aws:kms":
        return f"SSE-KMS (key {key_id})" if key_id else "SSE-KMS (the aws/s3 key)"
    return algorithm


class PublicAccessBlock(Setting):
    async def inspect(self, client: Any, bucket: str) -> list[Finding]:
        answer = await s3_request(
            client, "GetPublicAccessBlock", absent=NO_PUBLIC_ACCESS_BLOCK, Bucket=bucket
        )
        flags = (answer or {}).get("PublicAccessBlockConfiguration", {})
        open_ = [name for name in PUBLIC_ACCESS_FLAGS if not flags.get(name)]
        if answer is None:
            actual = "not configured"
        else:
            actual = "all blocked" if not open_ else "not set: " + ", ".join(open_)
        return [Finding("public access", "all blocked", actual, _ok(not open_))]

    async def apply(self, client: Any, bucket: str) -> None:
        await s3_request(
            client,
            "PutPublicAccessBlock",
            Bucket=bucket,
            PublicAccessBlockConfiguration=dict.fromkeys(PUBLIC_ACCESS_FLAGS, True),
        )


@dataclass(frozen=True, slots=True)
class Lifecycle(Setting):
    rules: tuple[Rule, ...]

    async def _current(self, client: Any, bucket: str) -> list[dict[str, Any]]:
        answer = await s3_request(
            client, "GetBucketLifecycleConfiguration", absent=NO_LIFECYCLE, Bucket=bucket
        )
        return list((answer or {}).get("Rules", []))

    async def inspect(self, client: Any, bucket: str) -> list[Finding]:
        have = {r.id: r for r in map(Rule.from_s3, await self._current(client, bucket))}
        findings = []
        for rule in self.rules:
            actual = have.pop(rule.id, None)
            seen = actual.describe() if actual else "absent"
            findings.append(
                Finding(f"lifecycle {rule.id}", rule.describe(), seen, _ok(actual == rule))
            )
        for stray in have.values():
            if stray.id.startswith(OURS):  # ours, but no longer wanted
                findings.append(
                    Finding(f"lifecycle {stray.id}", "absent", stray.describe(), "drift")
                )
        return findings

    async def apply(self, client: Any, bucket: str) -> None:
        theirs = [r for r in await self._current(client, bucket) if not _ours(r)]
        rules = theirs + [rule.to_s3() for rule in self.rules]
        if not rules:
            await s3_request(client, "DeleteBucketLifecycle", Bucket=bucket)
            return
        await s3_request(
            client,
            "PutBucketLifecycleConfiguration",
            Bucket=bucket,
            LifecycleConfiguration={"Rules": rules},
        )


@dataclass(frozen=True, slots=True)
class Replica:
    """Our replication rule: the whole primary bucket to the backup bucket."""

    role_arn: str
    destination: str
    kms_key_id: str | None = None
    enabled: bool = True

    def describe(self) -> str:
        key = f", replica key {self.kms_key_id}" if self.kms_key_id else ""
        state = "" if self.enabled else " (disabled)"
        return f"to {self.destination} as {self.role_arn}{key}{state}"


@dataclass(frozen=True, slots=True)
class Replication(Setting):
    wanted: Replica | None
    skipped: str | None = None  # why replication is expected but cannot be asked for
    late = True

    async def _current(self, client: Any, bucket: str) -> dict[str, Any]:
        answer = await s3_request(
            client, "GetBucketReplication", absent=NO_REPLICATION, Bucket=bucket
        )
        return dict((answer or {}).get("ReplicationConfiguration", {}))

    async def inspect(self, client: Any, bucket: str) -> list[Finding]:
        current = await self._current(client, bucket)
        ours = next((r for r in current.get("Rules", []) if r.get("ID") == REPLICATION_RULE), None)
        actual = _replica(current.get("Role", ""), ours) if ours else None
        seen = actual.describe() if actual else "none"
        if self.skipped is not None:
            return [Finding("replication", self.skipped, seen, "skipped")]
        if self.wanted is None and actual is None:
            return []  # not asked for, and none of ours there
        wanted = self.wanted.describe() if self.wanted else "none"
        return [Finding("replication", wanted, seen, _ok(actual == self.wanted))]

    async def apply(self, client: Any, bucket: str) -> None:
        current = await self._current(client, bucket)
        theirs = [r for r in current.get("Rules", []) if not _ours(r)]
        if self.wanted is None:
            if not theirs:
                await s3_request(client, "DeleteBucketReplication", Bucket=bucket)
                return
            rules = theirs
            role = current.get("Role", "")
        else:
            priority = 1 + max((int(r.get("Priority", 0)) for r in theirs), default=0)
            rules = [*theirs, _replication_rule(self.wanted, priority)]
            role = self.wanted.role_arn
        await s3_request(
            client,
            "PutBucketReplication",
            Bucket=bucket,
            ReplicationConfiguration={"Role": role, "Rules": rules},
        )


def _replication_rule(wanted: Replica, priority: int) -> dict[str, Any]:
    destination: dict[str, Any] = {"Bucket": f"arn:aws:s3:::{wanted.destination}"}
    rule: dict[str, Any] = {
        "ID": REPLICATION_RULE,
        "Priority": priority,
        "Status": "Enabled",
        # The whole bucket: S3-compatible servers differ in how they keep prefix filters.
        "Filter": {"Prefix": ""},
        "DeleteMarkerReplication": {"Status": "Disabled"},  # a deletion never reaches the backup
        "Destination": destination,
    }
    if wanted.kms_key_id is not None:
        destination["EncryptionConfiguration"] = {"ReplicaKmsKeyID": wanted.kms_key_id}
        rule["SourceSelectionCriteria"] = {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
    return rule


def _replica(role: str, rule: dict[str, Any]) -> Replica:
    destination = rule.get("Destination", {})
    bucket = str(destination.get("Bucket", "")).removeprefix("arn:aws:s3:::")
    key = destination.get("EncryptionConfiguration", {}).get("ReplicaKmsKeyID")
    return Replica(role, bucket, key, rule.get("Status") == "Enabled")


def _ours(rule: dict[str, Any]) -> bool:
    return str(rule.get("ID", "")).startswith(OURS)


def _ok(same: bool) -> State:
    return "ok" if same else "drift"


# -- the plan: every bucket with its settings ----------------------------------------------


@dataclass(frozen=True, slots=True)
class BucketPlan:
    name: str
    roles: tuple[str, ...]
    settings: tuple[Setting, ...] = field(default_factory=tuple)


def plan_buckets(config: Config) -> list[BucketPlan]:
    settings = config.buckets or BucketSettings()
    roles = role_buckets(config)
    by_bucket: dict[str, list[RoleBucket]] = {}
    for role in roles.values():
        by_bucket.setdefault(role.bucket, []).append(role)
    plans = []
    for bucket, members in by_bucket.items():
        chosen: list[Setting] = []
        if settings.versioning:
            chosen.append(Versioning())
        chosen.append(_encryption(settings))
        chosen.append(PublicAccessBlock())
        rules = [r for m in members for r in _rules_for(m, settings, config)]
        if settings.abort_multipart_days:
            rules.append(
                Rule(OURS + "abort-multipart", "", abort_days=settings.abort_multipart_days)
            )
        chosen.append(Lifecycle(tuple(rules)))
        if any(m.role == "data-primary" for m in members):
            chosen.append(_replication(settings, roles))
        plans.append(BucketPlan(bucket, tuple(m.role for m in members), tuple(chosen)))
    return plans


def _encryption(settings: BucketSettings) -> Encryption:
    if settings.encryption == "SSE-KMS":
        return Encryption("aws:kms", settings.kms_key_id)
    return Encryption("AES256", None)


def _rules_for(role: RoleBucket, settings: BucketSettings, config: Config) -> list[Rule]:
    if role.role == "data-primary" and settings.raw_tiering_days:
        tiering = ((settings.raw_tiering_days, "INTELLIGENT_TIERING"),)
        return [Rule(OURS + "raw-tiering", role.prefix, tiering)]
    if role.role == "data-backup":
        steps = (
            (settings.backup_glacier_days, "GLACIER"),
            (settings.backup_deep_archive_days, "DEEP_ARCHIVE"),
        )
        kept = tuple((days, kind) for days, kind in steps if days)
        return [Rule(OURS + "backup-archive", role.prefix, kept)] if kept else []
    if role.role == "logs-metadata" and settings.logs_expire_days:
        # Run reports and quarantined pages expire; the ledger beside them never does.
        days = settings.logs_expire_days
        old = days if settings.versioning else 0
        rules = [Rule(OURS + "logs-expire", role.prefix + "runs/", (), days, old)]
        quarantine = config.quarantine_url
        if quarantine.startswith("s3://") and S3Location.parse(quarantine).bucket == role.bucket:
            prefix = S3Location.parse(quarantine).prefix
            rules.append(Rule(OURS + "quarantine-expire", prefix, (), days, old))
        return rules
    return []


def _replication(settings: BucketSettings, roles: dict[str, RoleBucket]) -> Replication:
    primary, backup = roles["data-primary"].bucket, roles["data-backup"].bucket
    if not settings.replication:
        return Replication(None)
    if primary == backup:
        return Replication(None, "none: primary and backup are the same bucket")
    if settings.replication_role_arn is None:
        return Replication(
            None,
            f"to {backup}: needs replication_role_arn (a role S3 assumes to copy), "
            "or replication = false",
        )
    kms = settings.kms_key_id if settings.encryption == "SSE-KMS" else None
    return Replication(Replica(settings.replication_role_arn, backup, kms))


# -- create and status ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    bucket: str
    setting: str
    expected: str
    actual: str
    state: str  # status: ok, drift, skipped; create: unchanged, created, set, skipped, failed


async def status(config: Config) -> list[Row]:
    plans = plan_buckets(config)
    rows: list[Row] = []
    async with s3_client(_connection(config)) as client:
        for plan in plans:
            if not await _exists(client, plan.name):
                rows.append(Row(plan.name, "exists", "yes", "no", "drift"))
                continue
            rows.append(Row(plan.name, "exists", "yes", "yes", "ok"))
            for setting in plan.settings:
                rows += [
                    _row(plan.name, f, f.state) for f in await _inspect(setting, client, plan.name)
                ]
    return rows


async def create(config: Config) -> list[Row]:
    plans = plan_buckets(config)
    rows: list[Row] = []
    async with s3_client(_connection(config)) as client:
        ready = []
        for plan in plans:
            row = await _ensure(client, plan.name)
            rows.append(row)
            if row.state != "failed":
                ready.append(plan)
        for late in (False, True):
            for plan in ready:
                for setting in plan.settings:
                    if setting.late == late:
                        rows += await _converge(client, plan.name, setting)
    order = {plan.name: n for n, plan in enumerate(plans)}
    return sorted(rows, key=lambda row: order[row.bucket])  # stable: each bucket's rows together


async def _exists(client: Any, bucket: str) -> bool:
    return await s3_request(client, "HeadBucket", absent=NOT_FOUND, Bucket=bucket) is not None


async def _ensure(client: Any, bucket: str) -> Row:
    if await _exists(client, bucket):
        return Row(bucket, "exists", "yes", "yes", "unchanged")
    region = client.meta.region_name
    options: dict[str, Any] = {}
    if region and region != "us-east-1":  # us-east-1 refuses its own name as a constraint
        options["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        await s3_request(client, "CreateBucket", Bucket=bucket, **options)
    except StoreError as error:
        return Row(bucket, "exists", "yes", "no", f"failed: {_reason(error)}")
    return Row(bucket, "exists", "yes", "no", "created")


async def _inspect(setting: Setting, client: Any, bucket: str) -> list[Finding]:
    try:
        return await setting.inspect(client, bucket)
    except StoreError as error:
        # A server without this feature (MinIO, Ceph…) answers NotImplemented and the like.
        name = type(setting).__name__.lower()
        return [Finding(name, "readable", f"cannot read: {_reason(error)}", "drift")]


async def _converge(client: Any, bucket: str, setting: Setting) -> list[Row]:
    before = await _inspect(setting, client, bucket)
    if all(f.state != "drift" for f in before):
        return [_row(bucket, f, "unchanged" if f.state == "ok" else "skipped") for f in before]
    try:
        await setting.apply(client, bucket)
    except StoreError as error:
        hint = _refusal_hint(setting)
        return [
            _row(bucket, f, f"failed: {_reason(error)}{hint}") for f in before if f.state == "drift"
        ]
    after = {f.setting: f for f in await _inspect(setting, client, bucket)}
    rows = []
    for f in before:
        now = after.get(f.setting)
        if f.state != "drift":
            rows.append(_row(bucket, f, "unchanged" if f.state == "ok" else "skipped"))
        elif now is None or now.state == "ok":
            rows.append(_row(bucket, f, "set"))
        else:  # accepted, yet not what we asked for: the server does not keep it
            rows.append(_row(bucket, f, f"failed: the server accepted it but keeps {now.actual!r}"))
    return rows


def _refusal_hint(setting: Setting) -> str:
    if isinstance(setting, Replication):
        return " (this server or account does not replicate: set replication = false in [buckets])"
    return ""


def _row(bucket: str, finding: Finding, state: str) -> Row:
    return Row(bucket, finding.setting, finding.expected, finding.actual, state)


def _reason(error: StoreError) -> str:
    return str(error).split(" failed: ", 1)[-1]


def _connection(config: Config) -> S3Settings:
    return S3Settings.from_options(config.store.connection_options())


# -- the command ------------------------------------------------------------------------------


def add_buckets_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    buckets = commands.add_parser(
        "buckets", parents=[common], help="create, configure and check the four S3 buckets"
    )
    actions = buckets.add_subparsers(dest="action", required=True, parser_class=type(buckets))
    helps = {
        "create": "create the buckets and set what [buckets] says (changes only what differs)",
        "status": "compare each bucket with what [buckets] says; exit 1 on drift",
    }
    for name, text in helps.items():
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("--sources", type=Path, required=True, help="path to sources.toml")
        action.add_argument("--json", action="store_true", help="machine-readable output")


def buckets_command(config: Config, args: argparse.Namespace) -> bool:
    """Run ``create`` or ``status``; True when nothing failed (create) or drifted (status)."""
    action: str = args.action
    plans = plan_buckets(config)  # naming problems are config errors, before any request
    rows = asyncio.run(create(config) if action == "create" else status(config))
    bad = [r for r in rows if r.state == "drift" or r.state.startswith("failed")]
    if args.json:
        document = {
            "action": action,
            "ok": not bad,
            "buckets": {p.name: list(p.roles) for p in plans},
            "settings": [asdict(r) for r in rows],
        }
        print(json.dumps(document, indent=2))
        return not bad
    _print(rows, plans, action)
    for row in bad:
        if row.state == "drift":
            print(f"drift: {row.bucket} {row.setting}: expected {row.expected}, found {row.actual}")
        else:
            print(f"{row.state.split(':')[0]}: {row.bucket} {row.setting}: {row.state[8:]}")
    return not bad


def _print(rows: list[Row], plans: list[BucketPlan], action: str) -> None:
    roles = {p.name: ", ".join(p.roles) for p in plans}
    table = Table(title=f"buckets {action}")
    for column in ("bucket", "setting", "expected", "before" if action == "create" else "actual"):
        table.add_column(column)
    table.add_column("result" if action == "create" else "state")
    shown = ""
    for row in rows:
        bucket = f"{row.bucket} ({roles.get(row.bucket, '')})" if row.bucket != shown else ""
        shown = row.bucket
        table.add_row(bucket, row.setting, row.expected, row.actual, row.state)
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)
