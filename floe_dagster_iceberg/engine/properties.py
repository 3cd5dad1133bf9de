"""Table-property keys and their defaults: the one home of each policy.

Keys are PyIceberg's :class:`~pyiceberg.table.TableProperties` where it has them. Where the
Iceberg specification (Java) and PyIceberg disagree on a default, Iceberg's is used and the
difference is noted.
"""

from __future__ import annotations

from pyiceberg.table import TableProperties
from pyiceberg.typedef import Properties

TARGET_FILE_SIZE = TableProperties.WRITE_TARGET_FILE_SIZE_BYTES
TARGET_FILE_SIZE_DEFAULT = TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT  # 512 MiB

ROW_GROUP_LIMIT = TableProperties.PARQUET_ROW_GROUP_LIMIT
ROW_GROUP_LIMIT_DEFAULT = TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT

AVRO_COMPRESSION = TableProperties.WRITE_AVRO_COMPRESSION
AVRO_COMPRESSION_DEFAULT = TableProperties.WRITE_AVRO_COMPRESSION_DEFAULT

PARTITION_SUMMARY_LIMIT = TableProperties.WRITE_PARTITION_SUMMARY_LIMIT
PARTITION_SUMMARY_LIMIT_DEFAULT = TableProperties.WRITE_PARTITION_SUMMARY_LIMIT_DEFAULT

MANIFEST_MERGE_ENABLED = TableProperties.MANIFEST_MERGE_ENABLED
MANIFEST_MERGE_ENABLED_DEFAULT = True  # Iceberg's default; PyIceberg's is False
MANIFEST_MIN_MERGE_COUNT = TableProperties.MANIFEST_MIN_MERGE_COUNT
MANIFEST_MIN_MERGE_COUNT_DEFAULT = TableProperties.MANIFEST_MIN_MERGE_COUNT_DEFAULT  # 100
MANIFEST_TARGET_SIZE = TableProperties.MANIFEST_TARGET_SIZE_BYTES
MANIFEST_TARGET_SIZE_DEFAULT = TableProperties.MANIFEST_TARGET_SIZE_BYTES_DEFAULT  # 8 MiB

COMMIT_NUM_RETRIES = TableProperties.COMMIT_NUM_RETRIES
COMMIT_MIN_RETRY_WAIT_MS = TableProperties.COMMIT_MIN_RETRY_WAIT_MS
COMMIT_MAX_RETRY_WAIT_MS = TableProperties.COMMIT_MAX_RETRY_WAIT_MS
COMMIT_TOTAL_RETRY_TIME_MS = TableProperties.COMMIT_TOTAL_RETRY_TIME_MS

MAX_SNAPSHOT_AGE = "history.expire.max-snapshot-age-ms"
MAX_SNAPSHOT_AGE_DEFAULT_MS = 5 * 24 * 60 * 60 * 1000  # Iceberg's default: 5 days
MIN_SNAPSHOTS_TO_KEEP = "history.expire.min-snapshots-to-keep"
MIN_SNAPSHOTS_TO_KEEP_DEFAULT = 1

FORMAT_VERSION = TableProperties.FORMAT_VERSION
RESERVED_PROPERTIES = frozenset({FORMAT_VERSION})
"""Properties Iceberg keeps in the metadata itself: set at creation, never as plain properties."""

WRITABLE_FORMAT_VERSIONS = (1, 2)
"""Format versions whose manifests PyIceberg 0.12 can write."""


def int_property(properties: Properties, key: str, default: int) -> int:
    """An integer table property, or ``default`` when unset or not a number."""
    value = properties.get(key)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def bool_property(properties: Properties, key: str, default: bool) -> bool:
    """A boolean table property (``true``/``false``), or ``default`` when unset."""
    value = properties.get(key)
    return default if value is None else value.strip().lower() == "true"


def target_file_size(properties: Properties) -> int:
    """``write.target-file-size-bytes``: the size data files are cut at."""
    return max(1, int_property(properties, TARGET_FILE_SIZE, TARGET_FILE_SIZE_DEFAULT))


# Keys floe adds to the summary of every snapshot it commits.
WRITE_ID_PROPERTY = "floe.write-id"
"""One id per write: finds a commit whose outcome was unknown."""
WRITER_PROPERTY = "floe.writer"
IDEMPOTENCY_PROPERTY = "floe.idempotency-key"
WRITE_MODE_PROPERTY = "floe.write-mode"
"""append / overwrite / upsert: whether publishing a branch may re-apply the write elsewhere."""
"""An append's run, asset and partition keys: a retried step does not append twice."""
