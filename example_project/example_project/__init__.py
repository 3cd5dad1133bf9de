"""A small lakehouse on Apache Iceberg: raw events, Polars staging, a customer dimension, a
date x region fact, aggregates, time travel, maintenance and health checks."""
