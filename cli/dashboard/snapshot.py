"""The dashboard's data: a plain, immutable picture of the fleet at one moment.

The renderer is a pure function of this snapshot, so tests build snapshots by hand
and check the text a user would read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class SortKey(StrEnum):
    PROBLEMS = "problems"
    ID = "id"
    LAST_SEEN = "last_seen"


@dataclass(frozen=True, slots=True)
class MetricView:
    name: str
    value: float
    trend: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: str
    online: bool
    last_seen: float | None
    fw: str = ""
    group: str | None = None
    metrics: tuple[MetricView, ...] = ()
    gaps: int = 0
    reconnects: int = 0
    deadletters: int = 0

    @property
    def problem_score(self) -> int:
        """Higher means more in need of attention; sorts problems first."""
        return (0 if self.online else 100) + min(self.gaps, 50) + min(self.deadletters, 30) + min(self.reconnects, 20)


@dataclass(frozen=True, slots=True)
class CommandView:
    id: str
    device_id: str
    name: str
    state: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class EventView:
    ts: float
    kind: str  # "alert" or "deadletter"
    device_id: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Summary:
    devices_total: int = 0
    online: int = 0
    readings_in_per_s: float = 0.0
    persisted_per_s: float = 0.0
    rate_history: tuple[float, ...] = ()
    duplicates: int = 0
    gaps: int = 0
    deadletters: int = 0
    ingest_lag_s: float | None = None

    @property
    def offline(self) -> int:
        return self.devices_total - self.online


@dataclass(frozen=True, slots=True)
class ViewState:
    """What the user chose with the keys: sort order and a filter on id or group."""

    sort: SortKey = SortKey.PROBLEMS
    filter: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    hub_alive: bool
    hub_message: str = ""
    summary: Summary = field(default_factory=Summary)
    devices: tuple[DeviceView, ...] = ()
    commands: tuple[CommandView, ...] = ()
    events: tuple[EventView, ...] = ()
