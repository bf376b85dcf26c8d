"""Packed reading values come back as the very same double, in Python and in the SQL views."""

from __future__ import annotations

import math
import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from hub.storage.values import SQL_UNPACK, pack, unpack

finite = st.floats(allow_nan=False, allow_infinity=False)
decimal = st.builds(lambda m, k: round(m / 10**k, k), st.integers(-10**9, 10**9), st.integers(0, 6))


@given(st.one_of(finite, decimal))
def test_any_finite_value_round_trips_exactly(value: float) -> None:
    stored = pack(value)
    assert unpack(stored) == value
    assert value == 0 or math.copysign(1, unpack(stored)) == math.copysign(1, value)  # -0.0 may come back as 0.0
    conn = sqlite3.connect(":memory:")
    try:
        assert conn.execute("SELECT " + SQL_UNPACK.format(col="v") + " FROM (SELECT ? AS v)", (stored,)).fetchone()[0] \
            == value
    finally:
        conn.close()


def test_sensor_decimals_become_small_integers() -> None:
    assert isinstance(pack(21.53), int) and abs(pack(21.53)) < 2**15  # 2 bytes instead of 8
    assert isinstance(pack(52.123456), int) and abs(pack(52.123456)) < 2**31
    assert isinstance(pack(1e300), float)  # too big to pack: kept as it is
