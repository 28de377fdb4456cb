"""``[buckets]`` in sources.toml: how ``astroingest buckets create`` names and sets up buckets."""

from __future__ import annotations

import datetime
import re
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROLES = ("data-primary", "zarr-cubes", "data-backup", "logs-metadata")
BUCKET_NAME = re.compile(r"^(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
BUCKET_NAME_RULES = "3-63 lowercase letters, digits, '-' and '.'"
# AWS keeps an object in GLACIER at least this long before DEEP_ARCHIVE may follow.
GLACIER_TO_DEEP_ARCHIVE_DAYS = 90


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class BucketNames(_Strict):
    """Explicit names by role, for buckets the template should not name."""

    data_primary: str | None = Field(default=None, alias="data-primary")
    zarr_cubes: str | None = Field(default=None, alias="zarr-cubes")
    data_backup: str | None = Field(default=None, alias="data-backup")
    logs_metadata: str | None = Field(default=None, alias="logs-metadata")

    @field_validator("*")
    @classmethod
    def _valid(cls, value: str | None) -> str | None:
        if value is not None and not valid_bucket_name(value):
            raise ValueError(f"{value!r} is not a valid S3 bucket name ({BUCKET_NAME_RULES})")
        return value

    def of(self, role: str) -> str | None:
        name: str | None = getattr(self, role.replace("-", "_"))
        return name


class BucketSettings(_Strict):
    template: str = "astrobio-{role}-{date}"
    # No "today" default: a name that changes overnight would make `create` make new buckets.
    date: str | None = None
    names: BucketNames = BucketNames()
    versioning: bool = True
    encryption: Literal["SSE-S3", "SSE-KMS"] = "SSE-S3"
    kms_key_id: str | None = Field(default=None, min_length=1)
    # Lifecycle rules, in days; 0 leaves the rule out.
    raw_tiering_days: int = Field(default=30, ge=0, le=36500)
    backup_glacier_days: int = Field(default=30, ge=0, le=36500)
    backup_deep_archive_days: int = Field(default=180, ge=0, le=36500)
    logs_expire_days: int = Field(default=365, ge=0, le=36500)
    abort_multipart_days: int = Field(default=1, ge=0, le=36500)
    replication: bool = True
    replication_role_arn: str | None = Field(default=None, pattern=r"^arn:\S+$")

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            fields = [f for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
        except ValueError as error:
            raise ValueError(f"not a valid template: {error}") from None
        if "role" not in fields:
            raise ValueError("must contain {role}, or the four buckets would share one name")
        unknown = sorted(set(fields) - {"role", "date"})
        if unknown:
            raise ValueError(f"only {{role}} and {{date}} may be used, not {{{unknown[0]}}}")
        return value

    @field_validator("date")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            valid = len(value) == 8 and datetime.datetime.strptime(value, "%Y%m%d")
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f'a day written YYYYMMDD, such as "20260101", not {value!r}')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BucketSettings:
        if self.kms_key_id is not None and self.encryption != "SSE-KMS":
            raise ValueError('kms_key_id goes with encryption = "SSE-KMS"')
        glacier, deep = self.backup_glacier_days, self.backup_deep_archive_days
        if glacier and deep and deep < glacier + GLACIER_TO_DEEP_ARCHIVE_DAYS:
            raise ValueError(
                f"backup_deep_archive_days must be at least backup_glacier_days + "
                f"{GLACIER_TO_DEEP_ARCHIVE_DAYS} (S3 keeps objects that long in GLACIER)"
            )
        if self.replicates and not self.versioning:
            raise ValueError("replication needs versioning = true on both buckets")
        if self.replicates and self.encryption == "SSE-KMS" and self.kms_key_id is None:
            raise ValueError("replication of SSE-KMS objects needs kms_key_id (the replica key)")
        return self

    @property
    def replicates(self) -> bool:
        """Replication is expected only where it can be asked for: with a role to assume."""
        return self.replication and self.replication_role_arn is not None


def valid_bucket_name(name: str) -> bool:
    return BUCKET_NAME.match(name) is not None
