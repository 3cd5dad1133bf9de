"""pandas dtypes round-trip exactly through an Iceberg table (property test)."""

import itertools
import tempfile

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog

from floe_dagster_iceberg import IcebergTableManager, WriteConfig
from floe_dagster_iceberg.type_handlers import PandasDataFrameHandler
from floe_dagster_iceberg.type_handlers.pandas_frames import to_pandas

WAREHOUSE = tempfile.mkdtemp(prefix="pandas-dtypes-")
CATALOG = SqlCatalog(
    "dtypes", uri=f"sqlite:///{WAREHOUSE}/catalog.db", warehouse=f"file://{WAREHOUSE}"
)
MANAGER = IcebergTableManager(CATALOG)
TABLE_NUMBERS = itertools.count()

MICROSECONDS = st.integers(min_value=-(2**50), max_value=2**50)
COLUMNS = {
    "Int64": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    "Int32": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    "boolean": st.one_of(st.none(), st.booleans()),
    "Float64": st.one_of(st.none(), st.floats(allow_nan=False)),
    "string": st.one_of(st.none(), st.text()),
    "datetime64[us, UTC]": st.one_of(st.none(), MICROSECONDS),
}


@st.composite
def frames(draw) -> pd.DataFrame:
    rows = draw(st.integers(min_value=0, max_value=20))
    data = {}
    for dtype, values in COLUMNS.items():
        drawn = draw(st.lists(values, min_size=rows, max_size=rows))
        if dtype.startswith("datetime"):
            instants = [None if v is None else pd.Timestamp(v, unit="us", tz="UTC") for v in drawn]
            data[dtype] = pd.Series(instants, dtype=dtype)
        else:
            data[dtype] = pd.Series(drawn, dtype=dtype)
    return pd.DataFrame(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_nullable_dtypes_and_utc_timestamps_round_trip_exactly(frame: pd.DataFrame):
    table = f"dtypes.t{next(TABLE_NUMBERS)}"
    MANAGER.write(table, PandasDataFrameHandler().to_arrow(frame, table), WriteConfig())

    back = to_pandas(MANAGER.scan(table))

    pd.testing.assert_frame_equal(back, frame, check_dtype=True)
