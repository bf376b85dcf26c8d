"""The allowed metric names, their compact ids, units and valid ranges.

The id is what the binary form puts on the wire instead of the name. Ids are never
reused: a retired metric keeps its number.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric a device may report."""

    id: int
    name: str
    unit: str
    low: float
    high: float

    def accepts(self, value: float) -> bool:
        """True when ``value`` lies within the metric's valid range."""
        return self.low <= value <= self.high


METRICS: tuple[Metric, ...] = (
    Metric(1, "temperature", "°C", -60.0, 150.0),
    Metric(2, "humidity", "%", 0.0, 100.0),
    Metric(3, "battery_v", "V", 0.0, 60.0),
    Metric(4, "energy_wh", "Wh", 0.0, 1e15),
    Metric(5, "power_w", "W", -1e6, 1e6),
    Metric(6, "lat", "°", -90.0, 90.0),
    Metric(7, "lon", "°", -180.0, 180.0),
    Metric(8, "speed_kmh", "km/h", 0.0, 2000.0),
    Metric(9, "rssi_dbm", "dBm", -150.0, 0.0),
    Metric(10, "pressure_hpa", "hPa", 0.0, 2000.0),
    Metric(11, "co2_ppm", "ppm", 0.0, 100_000.0),
    Metric(12, "voltage_v", "V", 0.0, 1000.0),
    Metric(13, "current_a", "A", -1000.0, 1000.0),
    Metric(14, "heading_deg", "°", 0.0, 360.0),
)

_BY_NAME = {m.name: m for m in METRICS}
_BY_ID = {m.id: m for m in METRICS}


def metric_by_name(name: str) -> Metric | None:
    """The metric called ``name``, or None when it is not allowed."""
    return _BY_NAME.get(name)


def metric_by_id(metric_id: int) -> Metric | None:
    """The metric with compact id ``metric_id``, or None when it is unknown."""
    return _BY_ID.get(metric_id)
