"""Downsampled readings: count, min, max, sum (for the mean) and last value per series and period.

The writer folds each batch's new readings into one row per (series, period, start) in Python
(:func:`fold`) and upserts those rows in the batch's transaction, so an aggregate is exactly as
durable as the readings it covers. Retention deletes raw readings only: the aggregates of a
deleted minute or hour stay.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class Period(IntEnum):
    """Aggregate periods, in seconds."""

    MINUTE = 60
    HOUR = 3600

    @property
    def label(self) -> str:
        return {Period.MINUTE: "1m", Period.HOUR: "1h"}[self]

    @classmethod
    def from_label(cls, label: str) -> Period:
        """``1m`` or ``1h`` to a period."""
        for period in cls:
            if period.label == label:
                return period
        raise ValueError(f"unknown period {label!r} (1m or 1h)")


Fold = dict[tuple[int, int, int], list[float]]
"""(series, period, start ms) -> [count, low, high, total, last, last_ts ms]."""


def fold(samples: Iterable[tuple[int, int, float]]) -> Fold:
    """Aggregate (series, ts ms, value) by series, period and period start.

    Readings fold into minutes; the (far fewer) minutes then fold into hours.
    """
    acc: Fold = {}
    get = acc.get
    for series, ts, value in samples:
        key = (series, 60, ts - ts % 60_000)
        row = get(key)
        if row is None:
            acc[key] = [1, value, value, value, value, ts]
            continue
        row[0] += 1
        if value < row[1]:
            row[1] = value
        elif value > row[2]:
            row[2] = value
        row[3] += value
        if ts >= row[5]:
            row[4] = value
            row[5] = ts
    hours: Fold = {}
    for (series, _period, start), (count, low, high, total, last, last_ts) in acc.items():
        key = (series, 3600, start - start % 3_600_000)
        row = hours.get(key)
        if row is None:
            hours[key] = [count, low, high, total, last, last_ts]
            continue
        row[0] += count
        row[1] = min(row[1], low)
        row[2] = max(row[2], high)
        row[3] += total
        if last_ts >= row[5]:
            row[4] = last
            row[5] = last_ts
    acc.update(hours)
    return acc
