"""Deterministic synthetic data for the benchmark workloads.

Every system gets byte-identical Arrow tables: the same seed always gives the same rows, so a
run on one machine can be repeated and two systems never race on different data.

Columns (one row = one event):

=========  =================  ==========================================================
column     Arrow type         content
=========  =================  ==========================================================
id         int64              unique across the whole table: ``day * ID_STRIDE + n``
ts         timestamp[us]      a moment inside the partition's day (UTC, no time zone)
user_id    int64              uniform in [0, 1_000_000)
amount     float64            gamma-distributed, rounded to cents
country    string             one of 20 ISO codes, skewed like real traffic
payload    string             32 random hex characters (incompressible on purpose)
=========  =================  ==========================================================

The timestamp is time-zone naive because the community ``dagster-iceberg`` package only maps
Dagster time windows onto Iceberg ``timestamp`` (and ``date``) columns, not ``timestamptz``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

__all__ = [
    "FIRST_DAY",
    "ID_STRIDE",
    "SCHEMA",
    "day_bounds",
    "day_key",
    "partition_table",
    "range_table",
    "upsert_batch",
]

FIRST_DAY = dt.date(2024, 1, 1)
ID_STRIDE = 1_000_000_000
_MICROS_PER_DAY = 86_400 * 1_000_000
_COUNTRIES = np.array(
    [
        "US",
        "DE",
        "FR",
        "GB",
        "IN",
        "BR",
        "JP",
        "CA",
        "ES",
        "IT",
        "NL",
        "SE",
        "PL",
        "MX",
        "AU",
        "KR",
        "CH",
        "BE",
        "AT",
        "NO",
    ]
)
_COUNTRY_WEIGHTS = 1.0 / np.arange(1, len(_COUNTRIES) + 1)
_COUNTRY_WEIGHTS /= _COUNTRY_WEIGHTS.sum()
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("ts", pa.timestamp("us")),
        pa.field("user_id", pa.int64()),
        pa.field("amount", pa.float64()),
        pa.field("country", pa.string()),
        pa.field("payload", pa.string()),
    ]
)


def day_key(day: int) -> str:
    """The Dagster daily partition key of day number ``day`` (0 = FIRST_DAY)."""
    return (FIRST_DAY + dt.timedelta(days=day)).isoformat()


def day_bounds(day: int) -> tuple[dt.datetime, dt.datetime]:
    """Start (inclusive) and end (exclusive) of day number ``day`` as naive datetimes."""
    start = dt.datetime.combine(FIRST_DAY + dt.timedelta(days=day), dt.time())
    return start, start + dt.timedelta(days=1)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([20240101, *key]))


def _hex_strings(rng: np.random.Generator, n: int, nbytes: int = 16) -> pa.Array:
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    chars = np.empty((n, nbytes * 2), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 0x0F]
    offsets = np.arange(0, (n + 1) * nbytes * 2, nbytes * 2, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _columns(
    rng: np.random.Generator, ids: np.ndarray, day: int, ts_offsets: np.ndarray | None = None
) -> pa.Table:
    n = len(ids)
    if ts_offsets is None:
        ts_offsets = rng.integers(0, _MICROS_PER_DAY, size=n, dtype=np.int64)
    day_start = np.datetime64(FIRST_DAY + dt.timedelta(days=day), "us").astype(np.int64)
    ts = pa.array(day_start + ts_offsets, type=pa.int64()).cast(pa.timestamp("us"))
    amount = np.round(rng.gamma(2.0, 40.0, size=n), 2)
    return pa.Table.from_arrays(
        [
            pa.array(ids, type=pa.int64()),
            ts,
            pa.array(rng.integers(0, 1_000_000, size=n, dtype=np.int64)),
            pa.array(amount, type=pa.float64()),
            pa.array(rng.choice(_COUNTRIES, size=n, p=_COUNTRY_WEIGHTS)),
            _hex_strings(rng, n),
        ],
        schema=SCHEMA,
    )


def _ts_offsets(day: int, rows: int) -> np.ndarray:
    """The row timestamps of a day's partition: fixed per (day, rows), whatever the version."""
    return _rng(day, rows, 7).integers(0, _MICROS_PER_DAY, size=rows, dtype=np.int64)


def partition_table(day: int, rows: int, *, version: int = 0) -> pa.Table:
    """The rows of day ``day``: ids ``day * ID_STRIDE + [0, rows)``.

    ``version`` changes every value except ``id`` and ``ts``, which is what an overwrite of a
    partition with corrected data looks like.
    """
    ids = day * ID_STRIDE + np.arange(rows, dtype=np.int64)
    return _columns(_rng(day, rows, version), ids, day, _ts_offsets(day, rows))


def range_table(first_day: int, days: int, rows_per_day: int, *, version: int = 0) -> pa.Table:
    """Days ``first_day .. first_day + days - 1`` concatenated (one single-run backfill's output)."""
    return pa.concat_tables(
        [
            partition_table(d, rows_per_day, version=version)
            for d in range(first_day, first_day + days)
        ]
    ).combine_chunks()


def upsert_batch(
    day: int, partition_rows: int, rows: int, *, matched_fraction: float = 0.5
) -> pa.Table:
    """``rows`` rows for day ``day``: a ``matched_fraction`` share updates existing ids of
    ``partition_table(day, partition_rows)`` (same id and ts, new amount and payload), the rest are
    new ids of the same day. Keys are unique."""
    rng = _rng(day, partition_rows, rows, 99)
    matched = min(int(rows * matched_fraction), partition_rows)
    fresh = rows - matched
    positions = np.sort(rng.choice(partition_rows, size=matched, replace=False))
    old_ts = _ts_offsets(day, partition_rows)[positions]
    updated = _columns(rng, day * ID_STRIDE + positions.astype(np.int64), day, old_ts)
    new_ids = day * ID_STRIDE + partition_rows + np.arange(fresh, dtype=np.int64)
    inserted = _columns(rng, new_ids, day)
    return pa.concat_tables([updated, inserted]).combine_chunks()
