"""Benchmarks of floe-dagster-iceberg against raw Parquet, PyIceberg and dagster-iceberg."""
