"""The lakehouse assets. Each one is an Iceberg table written by the ``iceberg`` IO manager.

raw.events ──> staging.stg_events ──> marts.fct_orders ──> marts.revenue_by_region
(daily, PyArrow)  (daily, Polars)     (date x region)      (unpartitioned, all partitions)

dim.customers ──> dim.customers_baseline ──> marts.customer_tier_changes
(region, upsert)    (Iceberg tag)            (reads dim.customers at the tag: time travel)

CRM change feed ──> crm.customers
(batches of I/U/D)  (unpartitioned mirror, change-data-capture upsert)
"""

import datetime as dt

import dagster as dg
import polars as pl
import pyarrow as pa

from example_project import data
from floe_dagster_iceberg import IcebergCatalogResource

# A fixed quarter keeps the synthetic example deterministic; a live source drops end_date.
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-04-01")
REGIONS = dg.StaticPartitionsDefinition(list(data.REGIONS))
DAILY_BY_REGION = dg.MultiPartitionsDefinition({"date": DAILY, "region": REGIONS})

EVENTS = dg.AssetKey(["raw", "events"])
STG_EVENTS = dg.AssetKey(["staging", "stg_events"])
FCT_ORDERS = dg.AssetKey(["marts", "fct_orders"])
REVENUE_BY_REGION = dg.AssetKey(["marts", "revenue_by_region"])
CUSTOMERS = dg.AssetKey(["dim", "customers"])
CUSTOMERS_BASELINE = dg.AssetKey(["dim", "customers_baseline"])
CUSTOMER_TIER_CHANGES = dg.AssetKey(["marts", "customer_tier_changes"])

BASELINE_TAG = "baseline"
"""Iceberg tag on ``dim.customers`` that ``customer_tier_changes`` reads back (time travel)."""

DATA_TEAM = "team:data-platform"
ANALYTICS_TEAM = "team:analytics"


@dg.asset(
    key=EVENTS,
    group_name="raw",
    partitions_def=DAILY,
    io_manager_key="iceberg",
    metadata={"partition_expr": "event_time"},
    kinds={"iceberg", "pyarrow"},
    owners=[DATA_TEAM],
    tags={"layer": "raw"},
)
def events(context: dg.AssetExecutionContext) -> pa.Table:
    """Clickstream events of one UTC day, as delivered by the app (duplicates included).

    Table ``raw.events``, partitioned by ``day(event_time)``. Each run overwrites exactly its
    day, so re-running a partition (or a backfill) never duplicates rows.
    """
    window = context.partition_time_window
    days = (window.end - window.start).days
    tables = [data.events(window.start.date() + dt.timedelta(days=i)) for i in range(days)]
    return pa.concat_tables(tables)


@dg.asset(
    key=STG_EVENTS,
    group_name="staging",
    partitions_def=DAILY,
    ins={"events": dg.AssetIn(EVENTS)},
    io_manager_key="iceberg",
    metadata={"partition_expr": "event_date"},
    kinds={"iceberg", "polars"},
    owners=[DATA_TEAM],
    tags={"layer": "staging"},
)
def stg_events(events: pl.LazyFrame) -> pl.LazyFrame:
    """Events cleaned with Polars: one row per event id, normalised types, a UTC event date.

    The input is a lazy scan of the day's partition of ``raw.events`` (partition pruning
    happens in Iceberg); the output is lazy too and streams into ``staging.stg_events``.
    """
    return (
        events.unique(subset="event_id", keep="first", maintain_order=True)
        .with_columns(
            event_type=pl.col("event_type").str.to_lowercase(),
            event_date=pl.col("event_time").dt.date(),
            amount=pl.col("amount").fill_null(0.0),
        )
        .select(
            "event_id",
            "event_time",
            "event_date",
            "customer_id",
            "region",
            "event_type",
            "device",
            "amount",
        )
    )


def _multi_keys(context: dg.AssetExecutionContext) -> list[dict[str, str]]:
    return [
        DAILY_BY_REGION.get_partition_key_from_str(str(key)).keys_by_dimension
        for key in context.partition_keys
    ]


@dg.asset(
    key=FCT_ORDERS,
    group_name="marts",
    partitions_def=DAILY_BY_REGION,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "stg_events": dg.AssetIn(
            STG_EVENTS,
            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
                partition_dimension_name="date"
            ),
        )
    },
    io_manager_key="iceberg",
    metadata={"partition_expr": {"date": "event_date", "region": "region"}},
    kinds={"iceberg", "polars"},
    owners=[ANALYTICS_TEAM],
    tags={"layer": "mart"},
)
def fct_orders(context: dg.AssetExecutionContext, stg_events: pl.DataFrame) -> pl.DataFrame:
    """One row per purchase, partitioned by order date and region.

    A backfill runs as ONE run over the whole date x region range (single-run backfill
    policy); the IO manager replaces exactly the run's (date, region) cells in one commit.
    """
    cells = pl.DataFrame(
        {
            "event_date": [dt.date.fromisoformat(k["date"]) for k in _multi_keys(context)],
            "region": [k["region"] for k in _multi_keys(context)],
        }
    )
    orders = (
        stg_events.filter(pl.col("event_type") == "purchase")
        .join(cells, on=["event_date", "region"], how="semi")
        .select(
            pl.col("event_id").alias("order_id"),
            "event_date",
            "region",
            "customer_id",
            "device",
            "amount",
        )
        .sort("event_date", "region", "order_id")
    )
    context.log.info(f"{orders.height} orders in {cells.height} (date, region) partitions")
    return orders


@dg.asset(
    key=REVENUE_BY_REGION,
    group_name="marts",
    ins={
        "fct_orders": dg.AssetIn(
            FCT_ORDERS,
            partition_mapping=dg.AllPartitionMapping(),
            metadata={"columns": ["event_date", "region", "customer_id", "amount"]},
        )
    },
    io_manager_key="iceberg",
    metadata={"write_audit_publish": True},
    kinds={"iceberg", "polars"},
    owners=[ANALYTICS_TEAM],
    tags={"layer": "mart"},
)
def revenue_by_region(fct_orders: pl.LazyFrame) -> pl.DataFrame:
    """Revenue, orders and buyers per region over every loaded day.

    Unpartitioned: it reads all partitions of ``marts.fct_orders`` (an ``AllPartitionMapping``)
    and only the four columns it needs (``columns`` input metadata). Audited
    (``write_audit_publish``): each write is staged on an audit branch, and dashboards reading
    ``main`` see it only once ``revenue_by_region_is_sound`` passed.
    """
    return (
        fct_orders.group_by("region")
        .agg(
            orders=pl.len(),
            revenue=pl.col("amount").sum().round(2),
            buyers=pl.col("customer_id").n_unique(),
            first_day=pl.col("event_date").min(),
            last_day=pl.col("event_date").max(),
        )
        .sort("region")
        .collect()
    )


@dg.asset_check(asset=REVENUE_BY_REGION, blocking=True)
def revenue_by_region_is_sound(revenue_by_region: pl.DataFrame) -> dg.AssetCheckResult:
    """Blocks publication of a revenue table with a region without orders or with revenue
    that is not positive. It reads the staged write, on the run's audit branch."""
    unsound = revenue_by_region.filter((pl.col("orders") == 0) | (pl.col("revenue") <= 0))
    return dg.AssetCheckResult(
        passed=revenue_by_region.height > 0 and unsound.height == 0,
        metadata={
            "regions": revenue_by_region.height,
            "unsound_regions": unsound.get_column("region").to_list(),
        },
    )


class CustomerExportConfig(dg.Config):
    """Which CRM export to load."""

    export_date: str = "2024-01-07"
    """Date of the export (YYYY-MM-DD): later exports have more customers and upgraded tiers."""


@dg.asset(
    key=CUSTOMERS,
    group_name="dims",
    partitions_def=REGIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    io_manager_key="iceberg",
    metadata={
        "partition_expr": "region",
        "write_mode": "upsert",
        "upsert_options": {"join_cols": ["customer_id"]},
        "table_properties": {"write.metadata.previous-versions-max": "20"},
    },
    kinds={"iceberg", "pyarrow"},
    owners=[DATA_TEAM],
    tags={"layer": "dimension"},
)
def customers(context: dg.AssetExecutionContext, config: CustomerExportConfig) -> pa.Table:
    """Customer dimension, one static partition per region, upserted on ``customer_id``.

    Each load merges the CRM export into the table: changed customers are updated, new ones
    inserted, unchanged rows left alone, all in one commit per run.
    """
    export_date = dt.date.fromisoformat(config.export_date)
    table = data.customers(list(context.partition_keys), export_date)
    context.log.info(f"CRM export of {export_date}: {table.num_rows} customers")
    return table


@dg.asset(
    key=CUSTOMERS_BASELINE,
    group_name="dims",
    deps=[CUSTOMERS],
    kinds={"iceberg"},
    owners=[ANALYTICS_TEAM],
)
def customers_baseline(
    context: dg.AssetExecutionContext, iceberg_catalog: IcebergCatalogResource
) -> dg.MaterializeResult:
    """Publishes the current snapshot of ``dim.customers`` as the Iceberg tag ``baseline``.

    A tag is a named snapshot: it survives snapshot expiry and can be read at any time.
    """
    manager = iceberg_catalog.get_manager()
    table = "dim.customers"
    snapshot_id = manager.tag(table, BASELINE_TAG)
    context.log.info(f"Tagged snapshot {snapshot_id} of {table} as {BASELINE_TAG!r}")
    return dg.MaterializeResult(
        metadata={
            "iceberg/tag": BASELINE_TAG,
            "iceberg/snapshot_id": dg.MetadataValue.int(snapshot_id),
            "dagster/table_name": f"{iceberg_catalog.name}.{table}",
        }
    )


@dg.asset(
    key=CUSTOMER_TIER_CHANGES,
    group_name="marts",
    ins={"baseline": dg.AssetIn(CUSTOMERS, metadata={"ref": BASELINE_TAG})},
    deps=[CUSTOMERS_BASELINE],
    io_manager_key="iceberg",
    kinds={"iceberg", "polars"},
    owners=[ANALYTICS_TEAM],
    tags={"layer": "mart"},
)
def customer_tier_changes(
    baseline: pl.DataFrame, iceberg_catalog: IcebergCatalogResource
) -> pl.DataFrame:
    """Customers that are new or changed tier since the ``baseline`` tag (Iceberg time travel).

    The input ``baseline`` is ``dim.customers`` as it was at the tag (``ref`` input metadata;
    ``snapshot_id`` and ``as_of`` work the same way); the current rows come from the catalog.
    """
    current = pl.from_arrow(
        iceberg_catalog.get_manager().scan(
            "dim.customers", columns=["customer_id", "region", "tier"]
        )
    )
    before = baseline.select("customer_id", pl.col("tier").alias("tier_before"))
    return (
        current.join(before, on="customer_id", how="left")
        .filter(pl.col("tier_before").is_null() | (pl.col("tier") != pl.col("tier_before")))
        .select(
            "customer_id",
            "region",
            "tier_before",
            pl.col("tier").alias("tier_now"),
            pl.when(pl.col("tier_before").is_null())
            .then(pl.lit("new"))
            .otherwise(pl.lit("tier_change"))
            .alias("change"),
        )
        .sort("customer_id")
    )


# ----------------------------------------------------------------- change data capture

CRM_CUSTOMERS = dg.AssetKey(["crm", "customers"])


class CrmChangesConfig(dg.Config):
    """Which batch of the CRM change feed to apply."""

    batch: int = 1
    """Number of the change batch (1 is the first the feed delivered)."""


@dg.asset(
    key=CRM_CUSTOMERS,
    group_name="raw",
    io_manager_key="iceberg",
    metadata={
        "write_mode": "upsert",
        "upsert_options": {
            "join_cols": ["customer_id"],
            "delete_column": "op",
            "delete_values": ["D"],
            "version_column": "lsn",
        },
    },
    kinds={"iceberg", "pyarrow"},
    owners=[DATA_TEAM],
    tags={"layer": "raw"},
)
def crm_customers(context: dg.AssetExecutionContext, config: CrmChangesConfig) -> pa.Table:
    """The CRM database's customers, mirrored from its change feed (change data capture).

    Each run upserts one batch of changes on ``customer_id``: of several changes of a customer
    the newest ``lsn`` wins, ``op = 'D'`` deletes the customer, and a change that arrives late,
    after a newer one was applied, changes nothing. One commit per batch; the materialization
    reports ``iceberg/rows_updated``, ``iceberg/rows_inserted`` and ``iceberg/rows_removed``.
    """
    changes = data.crm_changes(config.batch)
    context.log.info(f"CRM change batch {config.batch}: {changes.num_rows} changes")
    return changes


lakehouse_assets = [
    events,
    stg_events,
    fct_orders,
    revenue_by_region,
    customers,
    customer_tier_changes,
    crm_customers,
]
"""The assets stored as Iceberg tables by the ``iceberg`` IO manager."""

all_assets = [*lakehouse_assets, customers_baseline]
"""Every asset of the code location (``customers_baseline`` tags a table, it stores none)."""

audit_checks = [revenue_by_region_is_sound]
"""Blocking checks of audited assets (write-audit-publish)."""

daily_events_job = dg.define_asset_job(
    "daily_events",
    # The health checks of the two tables run from the UI (or a schedule), not in every run.
    selection=dg.AssetSelection.assets(EVENTS, STG_EVENTS).without_checks(),
    partitions_def=DAILY,
    description="Raw events and their staging for one day. A backfill of this job runs one "
    "run per day: `dagster job backfill -j daily_events --from 2024-01-01 --to 2024-01-07`.",
)
"""The events of a day, loaded and cleaned: the job the demo backfills (one run per day)."""
