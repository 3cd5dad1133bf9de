"""The one retry policy of commits: the caller's settings, else the table's ``commit.retry.*``
properties, else floe's defaults; jittered exponential backoff.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from floe_dagster_iceberg.engine import properties as props
from floe_dagster_iceberg.engine.config import RetryPolicy


@dataclass(frozen=True)
class RetrySchedule:
    """Resolved retry limits of one write."""

    max_attempts: int
    initial_backoff_seconds: float
    max_backoff_seconds: float
    total_timeout_seconds: float

    def backoff_seconds(self, attempt: int) -> float:
        """Jittered exponential backoff: between half and all of the attempt's ceiling."""
        ceiling = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_INITIAL_BACKOFF_SECONDS = 0.05
DEFAULT_MAX_BACKOFF_SECONDS = 5.0
DEFAULT_TOTAL_TIMEOUT_SECONDS = 600.0


def resolve_retry(policy: RetryPolicy | None, properties: dict[str, str]) -> RetrySchedule:
    """``policy``'s fields, else the table's ``commit.retry.*`` properties, else floe's defaults.

    Example:
        >>> resolve_retry(RetryPolicy(max_attempts=3), {"commit.retry.min-wait-ms": "20"})
        RetrySchedule(max_attempts=3, initial_backoff_seconds=0.02, max_backoff_seconds=5.0, total_timeout_seconds=600.0)
    """
    policy = policy or RetryPolicy()

    def table_ms(key: str, default_seconds: float) -> float:
        return props.int_property(properties, key, round(default_seconds * 1000)) / 1000

    retries = props.int_property(properties, props.COMMIT_NUM_RETRIES, DEFAULT_MAX_ATTEMPTS - 1)
    return RetrySchedule(
        max_attempts=policy.max_attempts or max(1, retries + 1),
        initial_backoff_seconds=policy.initial_backoff_seconds
        or max(0.001, table_ms(props.COMMIT_MIN_RETRY_WAIT_MS, DEFAULT_INITIAL_BACKOFF_SECONDS)),
        max_backoff_seconds=policy.max_backoff_seconds
        or max(0.001, table_ms(props.COMMIT_MAX_RETRY_WAIT_MS, DEFAULT_MAX_BACKOFF_SECONDS)),
        total_timeout_seconds=policy.total_timeout_seconds
        or max(0.001, table_ms(props.COMMIT_TOTAL_RETRY_TIME_MS, DEFAULT_TOTAL_TIMEOUT_SECONDS)),
    )
