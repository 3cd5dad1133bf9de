"""Maintenance options: declared once, parsed the same way from Python, run config and YAML.

:class:`MaintenanceOptions` is the one declaration of what maintenance steps can be told: its
field names are the names everywhere (keywords of the Python builders, the maintenance op's run
config, the attributes of the ``dg`` component), with the same units, defaults, checks and
descriptions. Durations are hours (a :class:`datetime.timedelta` is accepted too), sizes are
bytes (a text such as ``"128MiB"`` is accepted too). Left out (null), an option comes from each
table's own properties.

Example:
    >>> from datetime import timedelta
    >>> options = MaintenanceOptions(expire_older_than_hours=timedelta(days=2),
    ...                              target_file_size_bytes="64MiB")
    >>> options.expire_older_than_hours, options.target_file_size_bytes
    (48.0, 67108864)
    >>> options.expire_older_than
    datetime.timedelta(days=2)
"""

from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import dagster as dg
from pydantic import BaseModel, ByteSize, ConfigDict, Field, TypeAdapter, field_validator

from floe_dagster_iceberg.engine.maintenance import DEFAULT_ORPHAN_AGE
from floe_dagster_iceberg.engine.maintenance.engines import LocalEngineConfig, SparkEngineConfig

__all__ = ["MaintenanceOptions", "maintenance_options", "option_config_fields"]

_BYTE_SIZE = TypeAdapter(ByteSize)


class MaintenanceOptions(dg.Model):
    """What the maintenance steps are told; every step reads only the options it needs.

    Example:
        >>> MaintenanceOptions().orphan_older_than
        datetime.timedelta(days=3)
        >>> MaintenanceOptions(retain_last=0)
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for MaintenanceOptions
        ...
    """

    model_config = ConfigDict(frozen=True)

    target_file_size_bytes: int | None = Field(
        default=None,
        description="Target size of a compacted file, in bytes (or a size such as '128MiB'); "
        "null: the table's write.target-file-size-bytes (Iceberg's default: 512 MiB).",
    )
    min_input_files: int = Field(
        default=2, ge=1, description="Rewrite a bin only when it holds at least this many files."
    )
    expire_older_than_hours: float | None = Field(
        default=None,
        description="Expire snapshots older than this many hours; null: the table's "
        "history.expire.max-snapshot-age-ms (Iceberg's default: 5 days).",
    )
    retain_last: int | None = Field(
        default=None,
        description="Keep this many newest snapshots per branch in any case; null: the "
        "table's history.expire.min-snapshots-to-keep (1).",
    )
    orphan_older_than_hours: float = Field(
        default=DEFAULT_ORPHAN_AGE.total_seconds() / 3600,
        ge=0,
        description="Only unreferenced files older than this many hours are orphans; "
        "in-flight writes are younger.",
    )
    orphan_dry_run: bool = Field(
        default=False, description="Report orphan files without deleting them."
    )
    audit_branch_max_age_hours: float = Field(
        default=7 * 24,
        ge=0,
        description="Snapshot expiry first removes the audit branches (write-audit-publish) "
        "whose last commit is older than this many hours: those of failed audits.",
    )
    # A plain union (each model's ``type`` tells them apart): the YAML model dg derives for the
    # component adds a template-string variant, which a discriminated union cannot hold.
    engine: LocalEngineConfig | SparkEngineConfig = Field(
        default_factory=LocalEngineConfig,
        description="Where compaction, manifest rewrite, snapshot expiry and orphan removal run: "
        "{type: local} (this process, the default) or {type: spark, ...} (Spark's Iceberg "
        "procedures on Spark Connect (connect_url) or a Spark session started here).",
    )

    @field_validator(
        "expire_older_than_hours",
        "orphan_older_than_hours",
        "audit_branch_max_age_hours",
        mode="before",
    )
    @classmethod
    def _hours(cls, value: Any) -> Any:
        return value.total_seconds() / 3600 if isinstance(value, timedelta) else value

    @field_validator("target_file_size_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return int(_BYTE_SIZE.validate_python(value)) if isinstance(value, str) else value

    @field_validator("target_file_size_bytes")
    @classmethod
    def _positive_size(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError("target_file_size_bytes must be positive (or null)")
        return value

    @field_validator("expire_older_than_hours")
    @classmethod
    def _not_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError("expire_older_than_hours must not be negative (or null)")
        return value

    @field_validator("retain_last")
    @classmethod
    def _at_least_one(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("retain_last must be at least 1 (or null)")
        return value

    @property
    def audit_branch_max_age(self) -> timedelta:
        """``audit_branch_max_age_hours`` as a duration."""
        return timedelta(hours=self.audit_branch_max_age_hours)

    @property
    def expire_older_than(self) -> timedelta | None:
        """``expire_older_than_hours`` as a duration (None: the table's property)."""
        hours = self.expire_older_than_hours
        return None if hours is None else timedelta(hours=hours)

    @property
    def orphan_older_than(self) -> timedelta:
        """``orphan_older_than_hours`` as a duration."""
        return timedelta(hours=self.orphan_older_than_hours)


def maintenance_options(
    options: MaintenanceOptions | None = None, values: Mapping[str, Any] | None = None
) -> MaintenanceOptions:
    """``options`` (or the defaults) with ``values`` (option name -> value) on top, checked.

    Example:
        >>> maintenance_options(MaintenanceOptions(retain_last=5), {"orphan_dry_run": True})
        MaintenanceOptions(target_file_size_bytes=None, min_input_files=2, expire_older_than_hours=None, retain_last=5, orphan_older_than_hours=72.0, orphan_dry_run=True, audit_branch_max_age_hours=168.0, engine=LocalEngineConfig(type=<MaintenanceEngine.LOCAL: 'local'>))
        >>> maintenance_options(values={"engine": {"type": "spark", "master": "local[2]"}}).engine.master
        'local[2]'
    """
    if not values:
        return options if options is not None else MaintenanceOptions()
    base = options.model_dump() if options is not None else {}
    return MaintenanceOptions.model_validate({**base, **values})


def _config_type(annotation: Any) -> Any:
    """The Dagster config type of an option: ``int | None`` -> ``Noneable(int)``; the engine
    (a discriminated union of models) -> a mapping checked by :class:`MaintenanceOptions`."""
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    if args and all(isinstance(arg, type) and issubclass(arg, BaseModel) for arg in args):
        return dg.Permissive()
    inner = [arg for arg in args if arg is not NoneType]
    if args and len(inner) == 1:
        return dg.Noneable(_config_type(inner[0]))
    if annotation in (bool, int, float, str):
        return annotation
    raise TypeError(f"no Dagster config type for {annotation!r}")


def option_config_fields(names: Iterable[str], defaults: MaintenanceOptions) -> dict[str, dg.Field]:
    """Op config fields of the options ``names``, defaulting to ``defaults``' values.

    Example:
        >>> fields = option_config_fields(["retain_last"], MaintenanceOptions(retain_last=3))
        >>> fields["retain_last"].default_value
        3
    """
    fields: dict[str, dg.Field] = {}
    for name in names:
        info = MaintenanceOptions.model_fields[name]
        default = getattr(defaults, name)
        fields[name] = dg.Field(
            _config_type(info.annotation),
            default_value=default.model_dump(mode="json")
            if isinstance(default, BaseModel)
            else default,
            description=info.description,
        )
    return fields
