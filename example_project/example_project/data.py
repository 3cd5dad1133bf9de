"""Deterministic synthetic sources: an event stream and a CRM export of customers.

Every value is a pure function of its inputs (day, region, export date), so re-running a
partition produces exactly the same rows on any machine. No network, no clock.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pyarrow as pa

REGIONS = ("eu", "us", "apac")
"""Sales regions; also the static partitions of the customer dimension."""

EPOCH = dt.date(2024, 1, 1)
"""First day of the synthetic history."""

TIERS = ("bronze", "silver", "gold")
DEVICES = ("web", "ios", "android")
EVENT_TYPES = ("page_view", "add_to_cart", "purchase")

_REGION_OFFSET = {"eu": 100_000, "us": 200_000, "apac": 300_000}
_REGION_WEIGHTS = (5, 4, 3)
_BASE_CUSTOMERS = 40
_NEW_CUSTOMERS_PER_WEEK = 2
_FIRST_NAMES = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia")
_LAST_NAMES = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("device", pa.string()),
        pa.field("amount", pa.float64()),
    ]
)

CUSTOMERS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("signup_date", pa.date32()),
    ]
)


def customers_known_on(region: str, day: dt.date) -> int:
    """Number of customers of ``region`` signed up by ``day`` (a few new ones every week)."""
    weeks = max(0, (day - EPOCH).days // 7)
    return _BASE_CUSTOMERS + _NEW_CUSTOMERS_PER_WEEK * weeks


def _signup_date(customer_index: int, customer_id: int) -> dt.date:
    if customer_index < _BASE_CUSTOMERS:
        return EPOCH - dt.timedelta(days=1 + random.Random(customer_id).randrange(365))
    week = (customer_index - _BASE_CUSTOMERS) // _NEW_CUSTOMERS_PER_WEEK + 1
    return EPOCH + dt.timedelta(weeks=week) - dt.timedelta(days=customer_index % 7)


def _tier(customer_id: int, signup: dt.date, export_date: dt.date) -> str:
    base = random.Random(f"tier-{customer_id}").choices(range(3), weights=(6, 3, 1))[0]
    # Every third customer is loyal: one tier up for every four weeks of membership.
    upgrades = (export_date - signup).days // 28 if customer_id % 3 == 0 else 0
    return TIERS[min(len(TIERS) - 1, base + max(0, upgrades))]


def customers(regions: list[str] | tuple[str, ...], export_date: dt.date) -> pa.Table:
    """The CRM export of ``regions`` as of ``export_date``: one row per customer.

    A later export has a few more customers and some upgraded tiers, so an upsert of it
    updates and inserts a handful of rows and leaves the rest unchanged.
    """
    rows: dict[str, list] = {name: [] for name in CUSTOMERS_SCHEMA.names}
    for region in regions:
        for index in range(customers_known_on(region, export_date)):
            customer_id = _REGION_OFFSET[region] + index
            rng = random.Random(customer_id)
            signup = _signup_date(index, customer_id)
            rows["customer_id"].append(customer_id)
            rows["region"].append(region)
            rows["name"].append(f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}")
            rows["tier"].append(_tier(customer_id, signup, export_date))
            rows["signup_date"].append(signup)
    return pa.Table.from_pydict(rows, schema=CUSTOMERS_SCHEMA)


def events(day: dt.date) -> pa.Table:
    """One day of clickstream events, with the ~2% duplicates an at-least-once feed delivers."""
    rng = random.Random(f"events-{day.isoformat()}")
    count = 150 + rng.randrange(50)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
    rows: dict[str, list] = {name: [] for name in EVENTS_SCHEMA.names}
    for index in range(count):
        region = rng.choices(REGIONS, weights=_REGION_WEIGHTS)[0]
        event_type = rng.choices(EVENT_TYPES, weights=(70, 20, 10))[0]
        customer_index = rng.randrange(customers_known_on(region, day))
        row = {
            "event_id": f"{day:%Y%m%d}-{index:05d}",
            "event_time": start + dt.timedelta(seconds=rng.randrange(86_400)),
            "customer_id": _REGION_OFFSET[region] + customer_index,
            "region": region,
            "event_type": event_type.upper() if rng.random() < 0.05 else event_type,
            "device": rng.choice(DEVICES),
            "amount": round(rng.uniform(5, 250), 2) if event_type == "purchase" else None,
        }
        copies = 2 if rng.random() < 0.02 else 1
        for _ in range(copies):
            for name, value in row.items():
                rows[name].append(value)
    return pa.Table.from_pydict(rows, schema=EVENTS_SCHEMA)


# -------------------------------------------------------------------------- CRM change feed

CRM_CHANGES_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("lsn", pa.int64(), nullable=False),
        pa.field("op", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("plan", pa.string()),
    ]
)
"""One change of the CRM database's ``customers`` table: ``op`` is ``I`` (insert), ``U``
(update) or ``D`` (delete, no values); ``lsn`` is the change's position in the database log."""

CRM_BATCHES = 2
"""Change batches the feed delivers (numbered from 1)."""

PLANS = ("free", "pro", "team")

_CRM_OFFSET = 500_000
_CRM_EVENTS = 80
_CRM_LATE = 3


def crm_change_log() -> list[dict]:
    """Every change of the CRM ``customers`` table, in log order: inserts, plan and name
    updates (several per customer), and deletes. A deleted customer id is never reused."""
    rng = random.Random("crm-feed")
    live: list[int] = []
    created = 0
    log: list[dict] = []
    for lsn in range(1, _CRM_EVENTS + 1):
        roll = rng.random()
        if len(live) < 12 or roll < 0.3:
            customer_id = _CRM_OFFSET + created
            created += 1
            live.append(customer_id)
            name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
            log.append(_change(customer_id, lsn, "I", name, rng.choice(PLANS)))
        elif roll < 0.85:
            # New customers change their plan most: 4 of 5 updates are of the 6 newest ones.
            customer_id = rng.choice(live[-6:] if rng.random() < 0.8 else live)
            previous = next(c for c in reversed(log) if c["customer_id"] == customer_id)
            name = previous["name"]
            if rng.random() < 0.2:  # a name change; most updates change the plan
                name = f"{name.split()[0]} {rng.choice(_LAST_NAMES)}"
            plan = rng.choice([p for p in PLANS if p != previous["plan"]])
            log.append(_change(customer_id, lsn, "U", name, plan))
        else:
            customer_id = live.pop(rng.randrange(len(live)))
            log.append(_change(customer_id, lsn, "D", None, None))
    return log


def _change(customer_id: int, lsn: int, op: str, name: str | None, plan: str | None) -> dict:
    return {"customer_id": customer_id, "lsn": lsn, "op": op, "name": name, "plan": plan}


def crm_changes(batch: int) -> pa.Table:
    """Change batch ``batch`` (1..``CRM_BATCHES``) of the CRM feed, in delivery order.

    Batches cut the log into consecutive ranges, except that a few updates are delivered one
    batch late, after a newer change of the same customer: applied blindly in delivery order,
    they would undo that newer change.
    """
    if not 1 <= batch <= CRM_BATCHES:
        raise ValueError(f"batch {batch} is not a CRM change batch; use 1..{CRM_BATCHES}")
    log = crm_change_log()
    size = -(-len(log) // CRM_BATCHES)
    ranges = [log[start : start + size] for start in range(0, len(log), size)]
    # The last batch is complete: nothing of it comes later.
    late = [*(_late_changes(r, after) for r, after in itertools.pairwise(ranges)), []]
    delivered = [c for c in ranges[batch - 1] if c not in late[batch - 1]]
    if batch > 1:
        delivered += late[batch - 2]
    return pa.Table.from_pylist(delivered, schema=CRM_CHANGES_SCHEMA)


def _late_changes(changes: list[dict], next_changes: list[dict]) -> list[dict]:
    """The updates of a range that reach the feed late, in the next batch: each has a newer
    update or insert of its customer in its own range (never a delete, which leaves no row to
    compare versions with) and none in the next, so only the table's version rejects it."""
    newest = {c["customer_id"]: c for c in changes}
    changed_next = {c["customer_id"] for c in next_changes}
    candidates = [
        c
        for c in changes
        if c["op"] == "U"
        and newest[c["customer_id"]] is not c
        and newest[c["customer_id"]]["op"] != "D"
        and c["customer_id"] not in changed_next
    ]
    return random.Random(f"crm-late-{changes[0]['lsn']}").sample(
        candidates, min(_CRM_LATE, len(candidates))
    )
