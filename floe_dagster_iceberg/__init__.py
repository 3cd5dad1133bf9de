"""floe-dagster-iceberg."""
