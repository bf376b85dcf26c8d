"""The fleet at a glance: an immutable snapshot model, and the loader that fills it from SQLite.

The dashboard's renderer is a pure function of a :class:`Snapshot`, so tests build
snapshots by hand and check the text a user would read; :class:`OverviewLoader` builds
them from the fleet database for the live screen and for ``fleet status``.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from hub.status import alive
from hub.storage import ConfigStore, StorageError, open_database, queries
from hub.storage.alarms import AlarmStore
from protocol.config import Description
from protocol.models import CommandState


class SortKey(StrEnum):
    PROBLEMS = "problems"
    ID = "id"
    LAST_SEEN = "last_seen"


@dataclass(frozen=True, slots=True)
class MetricView:
    name: str
    value: float
    trend: tuple[float, ...] = ()
    unit: str = ""
    """The unit the device declares in its description ('': the metric table's)."""


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One row of the fleet table.

    ``gaps`` counts messages still missing in the device's sequence numbers (sent, never received);
    ``reconnects`` counts births after the first; ``resets`` counts boots that went backwards (the
    device lost its boot counter); ``critical_alerts`` and ``alerts`` count alerts of the last hour.
    """

    id: str
    online: bool
    last_seen: float | None
    fw: str = ""
    group: str | None = None
    metrics: tuple[MetricView, ...] = ()
    gaps: int = 0
    reconnects: int = 0
    deadletters: int = 0
    resets: int = 0
    """Births whose boot went back (flash wiped, board replaced): firmware_protocol.md 4.1."""
    critical_alerts: int = 0
    alerts: int = 0
    sleeping: bool = False
    """A sleepy device between wakes (firmware_protocol.md 4.5): not online, and not offline either."""
    alarms: int = 0
    """Open alarms of the hub's rules (``fleet alarms --active``)."""

    @property
    def problem_score(self) -> int:
        """Higher means more in need of attention; sorts problems first.

        Offline beats everything; then critical alerts and resets (each a sign the device itself is in
        trouble), then lost messages, rejected messages and reconnects (signs of a poor link).
        """
        return ((0 if self.online or self.sleeping else 1000) + 100 * min(self.alarms, 5)
                + 100 * min(self.critical_alerts, 5) + 60 * min(self.resets, 5)
                + min(self.gaps, 50) + min(self.deadletters, 30) + min(self.reconnects, 20) + min(self.alerts, 10))


@dataclass(frozen=True, slots=True)
class CommandView:
    id: str
    device_id: str
    name: str
    state: CommandState
    updated_at: float
    created_at: float = 0.0
    detail: str = ""
    args: str = ""  # JSON text, as stored
    result: str = ""  # JSON text, as the device reported it


@dataclass(frozen=True, slots=True)
class EventView:
    ts: float
    kind: str  # "alert", "deadletter" or "reset"
    device_id: str | None
    text: str
    severity: str = ""  # alerts: info, warning or critical


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
    resets: int = 0
    critical_alerts: int = 0
    sleeping: int = 0
    alarms: int = 0
    """Open alarms (active or acknowledged) of the hub's rules."""

    @property
    def offline(self) -> int:
        return self.devices_total - self.online - self.sleeping


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


@dataclass(frozen=True, slots=True)
class MetricHistory:
    """One metric of one device over the history window: (bucket start, mean value) points, oldest first,
    and the lowest and highest single reading of the window."""

    name: str
    latest: float | None
    points: tuple[tuple[float, float], ...] = ()
    low: float | None = None
    high: float | None = None
    unit: str = ""
    """The unit the device declares in its description ('': the metric table's)."""

    @property
    def values(self) -> tuple[float, ...]:
        return tuple(v for _, v in self.points)


@dataclass(frozen=True, slots=True)
class PresenceView:
    ts: float
    state: str
    reason: str
    boot: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceDetail:
    """Everything the device screen shows about one device, as of ``taken_at``."""

    id: str
    taken_at: float
    known: bool = True
    device: DeviceView | None = None
    state_since: float | None = None
    state_reason: str = ""
    boot: int | None = None
    window_s: float = 3600.0
    buckets: int = 60
    metrics: tuple[MetricHistory, ...] = ()
    presence: tuple[PresenceView, ...] = ()
    commands: tuple[CommandView, ...] = ()
    alerts: tuple[EventView, ...] = ()


# ---------------------------------------------------------------------------- loading from the database


class OverviewLoader:
    """Builds snapshots from the fleet database; keeps short histories for rates and trends.

    Every query is cheap (indexed lookups, or counts over small tables), so a snapshot costs a few
    milliseconds even for thousands of devices. Readers never block the hub's writer (WAL).
    """

    def __init__(self, db: str | Path, history: int = 60, trend: int = 12) -> None:
        self.db = Path(db)
        self._conn: sqlite3.Connection | None = None
        self._last: tuple[float, int, int] | None = None  # (time, readings mark, messages mark)
        self._rates: deque[float] = deque(maxlen=history)
        self._trends: dict[tuple[str, str], deque[float]] = {}
        self._trend_len = trend
        self._last_devices: dict[str, DeviceView] = {}
        self._described: dict[str, dict[str, str]] = {}
        """Description body -> metric -> declared unit (parsed once per description)."""

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_database(self.db, readonly=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def load(self, now: float | None = None, commands: int = 10, events: int = 10) -> Snapshot:
        """One snapshot. Never raises for a missing or busy database: the snapshot says what is wrong."""
        now = time.time() if now is None else now
        try:
            return self._load(now, commands, events)
        except (StorageError, sqlite3.Error) as exc:  # missing, foreign, or busy beyond the read timeout: said on screen
            self.close()
            return Snapshot(taken_at=now, hub_alive=False, hub_message=f"database: {exc}")

    def _units(self, device_id: str | None = None) -> dict[str, dict[str, str]]:
        """Device -> metric -> the unit its description declares (firmware_protocol.md 13.5)."""
        out: dict[str, dict[str, str]] = {}
        for dev, body in ConfigStore(self._db()).described_devices().items():
            if device_id is not None and dev != device_id:
                continue
            if body not in self._described:
                self._described[body] = {m: u for m, (u, _, _) in Description.model_validate_json(body).metric_ranges().items()}
            out[dev] = self._described[body]
        return out

    def _load(self, now: float, n_commands: int, n_events: int) -> Snapshot:
        rows = queries.overview(self._db(), n_commands, n_events, alerts_since=now - ALERT_WINDOW_S)
        units = self._units()
        beats = rows.heartbeats
        live = [b for b in beats if alive(b, now)]
        stats: dict[str, float] = {}
        for b in live:
            for key, value in b.stats.items():
                if isinstance(value, (int, float)):
                    stats[key] = stats.get(key, 0) + value
        if live:
            message = ""
        elif beats and all(b.stats.get("stopped") for b in beats):
            last = max(beats, key=lambda b: b.updated_at)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.updated_at))
            message = f"hub stopped cleanly at {when} (worker {last.worker})"
        elif beats:
            message = f"no heartbeat for {now - max(b.updated_at for b in beats):.0f}s"
        else:
            message = "no hub has run on this database"

        persisted_rate = in_rate = 0.0
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            persisted_rate = max(0, rows.readings_mark - self._last[1]) / dt
            in_rate = max(0, rows.messages_mark - self._last[2]) / dt
        self._last = (now, rows.readings_mark, rows.messages_mark)
        self._rates.append(persisted_rate)

        registered = rows.groups
        presence = rows.presence
        alert_counts, resets = rows.alert_counts, rows.resets
        latest: dict[str, list[tuple[str, float]]] = {}
        for dev, metric, value in rows.latest:
            latest.setdefault(dev, []).append((metric, value))

        open_alarms = AlarmStore(self._db()).open_by_device()
        devices = []
        for dev in sorted(set(registered) | set(presence)):
            p = presence.get(dev)
            metrics = []
            for metric, value in latest.get(dev, []):
                trend = self._trends.setdefault((dev, metric), deque(maxlen=self._trend_len))
                if not trend or trend[-1] != value:
                    trend.append(value)
                metrics.append(MetricView(metric, value, tuple(trend), units.get(dev, {}).get(metric, "")))
            devices.append(DeviceView(
                id=dev, group=registered.get(dev), online=bool(p and p[0] == "online"), last_seen=p[1] if p else None,
                fw=(p[2] or "") if p else "", metrics=tuple(metrics), gaps=rows.gaps.get(dev, 0),
                reconnects=max(0, int(rows.births.get(dev, 0)) - 1), deadletters=int(rows.deadletters_by_device.get(dev, 0)),
                resets=resets.get(dev, 0), critical_alerts=alert_counts.get(dev, (0, 0))[0],
                alerts=alert_counts.get(dev, (0, 0))[1], sleeping=bool(p and p[0] == "sleeping"),
                alarms=open_alarms.get(dev, 0),
            ))

        self._last_devices = {d.id: d for d in devices}
        command_rows = [_command_view(r) for r in rows.commands]
        event_rows = [_alert_view(r) for r in rows.alerts]
        event_rows += [EventView(r[0], "deadletter", r[1], f"{r[2]}: {r[3]}") for r in rows.deadletter_events]
        event_rows += [EventView(r[0], "reset", r[1], f"boot {r[2]} -> {r[3]} (incarnation {r[4]})")
                       for r in rows.reset_events]
        event_rows.sort(key=lambda e: -e.ts)

        summary = Summary(
            devices_total=len(devices), online=sum(1 for d in devices if d.online),
            readings_in_per_s=float(stats.get("readings_in_per_s", in_rate)), persisted_per_s=persisted_rate,
            rate_history=tuple(self._rates), duplicates=int(stats.get("duplicates", 0)), gaps=sum(rows.gaps.values()),
            deadletters=rows.deadletters_total, ingest_lag_s=stats.get("lag_s") if live else None,
            resets=sum(d.resets for d in devices),
            critical_alerts=sum(c for c, _ in alert_counts.values()),
            sleeping=sum(1 for d in devices if d.sleeping), alarms=sum(open_alarms.values()),
        )
        return Snapshot(taken_at=now, hub_alive=bool(live), hub_message=message, summary=summary,
                        devices=tuple(devices), commands=tuple(command_rows), events=tuple(event_rows[:n_events]))

    def load_device(self, device_id: str, now: float | None = None, window_s: float = 3600.0,
                    buckets: int = 60, rows: int = 10) -> DeviceDetail:
        """The device screen's data for ``device_id``: metric history over ``window_s`` in ``buckets``
        means per metric, presence history, recent commands and alerts (newest first).

        Never raises for a missing or busy database: the detail comes back empty.
        """
        now = time.time() if now is None else now
        try:
            return self._load_device(device_id, now, window_s, buckets, rows)
        except (StorageError, sqlite3.Error):
            self.close()
            return DeviceDetail(id=device_id, taken_at=now, known=False, window_s=window_s, buckets=buckets)

    def _load_device(self, device_id: str, now: float, window_s: float, buckets: int, limit: int) -> DeviceDetail:
        since = now - window_s
        bucket_s = window_s / max(1, buckets)
        rows = queries.device_detail(self._db(), device_id, since, bucket_s, limit)
        points: dict[str, list[tuple[float, float]]] = {}
        ranges: dict[str, tuple[float, float]] = {}
        for metric, bucket, mean, low, high in rows.history:
            points.setdefault(metric, []).append((since + bucket * bucket_s, float(mean)))
            lo, hi = ranges.get(metric, (low, high))
            ranges[metric] = (min(lo, low), max(hi, high))
        declared = self._units(device_id).get(device_id, {})
        metrics = tuple(MetricHistory(name, rows.latest.get(name, pts[-1][1]), tuple(pts), *ranges[name],
                                      unit=declared.get(name, "")) for name, pts in points.items())
        metrics += tuple(MetricHistory(name, value, unit=declared.get(name, "")) for name, value in sorted(rows.latest.items())
                         if name not in points)
        device = self._last_devices.get(device_id)
        presence = rows.presence
        return DeviceDetail(
            id=device_id, taken_at=now, known=device is not None or presence is not None or bool(metrics), device=device,
            state_since=presence[0] if presence else None, state_reason=presence[1] if presence else "",
            boot=presence[2] if presence else None, window_s=window_s, buckets=buckets, metrics=metrics,
            presence=tuple(PresenceView(*r) for r in rows.presence_events),
            commands=tuple(_command_view(r) for r in rows.commands), alerts=tuple(_alert_view(r) for r in rows.alerts),
        )


ALERT_WINDOW_S = 3600.0
"""Alerts younger than this count for a device's problems and the header's critical count."""


def _command_view(row: tuple) -> CommandView:  # type: ignore[type-arg]
    cid, device_id, name, state, updated_at, created_at, detail, args, result = row
    return CommandView(cid, device_id, name, CommandState(state), updated_at, created_at, detail, args, result)


def _alert_view(row: tuple) -> EventView:  # type: ignore[type-arg]
    received_at, device_id, severity, code, message = row
    return EventView(received_at, "alert", device_id, f"{code} {message}".strip(), severity=severity)
