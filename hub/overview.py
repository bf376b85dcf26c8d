"""The fleet at a glance: an immutable snapshot model, and the loader that fills it from SQLite.

The dashboard's renderer is a pure function of a :class:`Snapshot`, so tests build
snapshots by hand and check the text a user would read; :class:`OverviewLoader` builds
them from the fleet database for the live screen and for ``fleet status``.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from hub.status import alive, read_heartbeats


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
    critical_alerts: int = 0
    alerts: int = 0

    @property
    def problem_score(self) -> int:
        """Higher means more in need of attention; sorts problems first.

        Offline beats everything; then critical alerts and resets (each a sign the device itself is in
        trouble), then lost messages, rejected messages and reconnects (signs of a poor link).
        """
        return ((0 if self.online else 1000) + 100 * min(self.critical_alerts, 5) + 60 * min(self.resets, 5)
                + min(self.gaps, 50) + min(self.deadletters, 30) + min(self.reconnects, 20) + min(self.alerts, 10))


@dataclass(frozen=True, slots=True)
class CommandView:
    id: str
    device_id: str
    name: str
    state: str
    updated_at: float
    created_at: float = 0.0
    detail: str = ""
    args: str = ""  # JSON text, as stored
    result: str = ""  # JSON text, as the device reported it


@dataclass(frozen=True, slots=True)
class EventView:
    ts: float
    kind: str  # "alert" or "deadletter"
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
    critical_alerts: int = 0

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


@dataclass(frozen=True, slots=True)
class MetricHistory:
    """One metric of one device over the history window: (bucket start, mean value) points, oldest first,
    and the lowest and highest single reading of the window."""

    name: str
    latest: float | None
    points: tuple[tuple[float, float], ...] = ()
    low: float | None = None
    high: float | None = None

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
        self._last: tuple[float, int, int] | None = None  # (time, max reading id, max message id)
        self._rates: deque[float] = deque(maxlen=history)
        self._trends: dict[tuple[str, str], deque[float]] = {}
        self._trend_len = trend
        self._last_devices: dict[str, DeviceView] = {}

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.db.exists():
                raise FileNotFoundError(f"no fleet database at {self.db}")
            self._conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=2, check_same_thread=False)
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
        except (sqlite3.Error, FileNotFoundError) as exc:
            self.close()
            return Snapshot(taken_at=now, hub_alive=False, hub_message=f"database: {exc}")

    def _load(self, now: float, n_commands: int, n_events: int) -> Snapshot:
        conn = self._db()
        q = lambda sql, *p: conn.execute(sql, p).fetchall()  # noqa: E731
        tables = {r[0] for r in q("SELECT name FROM sqlite_master WHERE type='table'")}

        beats = read_heartbeats(conn)
        live = [b for b in beats if alive(b, now)]
        stats: dict[str, float] = {}
        for b in live:
            for key, value in b["stats"].items():
                if isinstance(value, (int, float)):
                    stats[key] = stats.get(key, 0) + value
        if live:
            message = ""
        elif beats:
            message = f"no heartbeat for {now - max(b['updated_at'] for b in beats):.0f}s"
        else:
            message = "no hub has run on this database"

        max_reading = q("SELECT COALESCE(MAX(id), 0) FROM readings")[0][0] if "readings" in tables else 0
        max_message = q("SELECT COALESCE(MAX(id), 0) FROM messages")[0][0] if "messages" in tables else 0
        persisted_rate = in_rate = 0.0
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            persisted_rate = max(0, max_reading - self._last[1]) / dt
            in_rate = max(0, max_message - self._last[2]) / dt
        self._last = (now, max_reading, max_message)
        self._rates.append(persisted_rate)

        registered: dict[str, str | None] = dict(q(
            "SELECT id, grp FROM principals WHERE role='device' AND revoked_at IS NULL")) if "principals" in tables else {}
        presence = {r[0]: r for r in q("SELECT device_id, state, last_seen, fw FROM devices")} if "devices" in tables else {}
        gaps = dict(q("SELECT device_id, SUM(missing) FROM gaps GROUP BY device_id")) if "gaps" in tables else {}
        births = dict(q("SELECT device_id, COUNT(*) FROM presence_events WHERE state='online' GROUP BY device_id")) \
            if "presence_events" in tables else {}
        dead = dict(q("SELECT device_id, COUNT(*) FROM deadletters GROUP BY device_id")) if "deadletters" in tables else {}
        alert_counts = recent_alert_counts(conn, now - ALERT_WINDOW_S) if "alerts" in tables else {}
        resets = reset_counts(conn, tables)
        latest: dict[str, list[tuple[str, float]]] = {}
        if "latest" in tables:
            for dev, metric, value in q("SELECT device_id, metric, value FROM latest"):
                latest.setdefault(dev, []).append((metric, value))

        devices = []
        for dev in sorted(set(registered) | set(presence)):
            p = presence.get(dev)
            metrics = []
            for metric, value in latest.get(dev, []):
                trend = self._trends.setdefault((dev, metric), deque(maxlen=self._trend_len))
                if not trend or trend[-1] != value:
                    trend.append(value)
                metrics.append(MetricView(metric, value, tuple(trend)))
            devices.append(DeviceView(
                id=dev, group=registered.get(dev), online=bool(p and p[1] == "online"), last_seen=p[2] if p else None, fw=(p[3] or "") if p else "",
                metrics=tuple(metrics), gaps=int(gaps.get(dev) or 0), reconnects=max(0, int(births.get(dev, 0)) - 1),
                deadletters=int(dead.get(dev, 0)), resets=resets.get(dev, 0),
                critical_alerts=alert_counts.get(dev, (0, 0))[0], alerts=alert_counts.get(dev, (0, 0))[1],
            ))

        self._last_devices = {d.id: d for d in devices}
        command_rows: list[CommandView] = []
        if "commands" in tables:
            command_rows = [CommandView(*r) for r in q(
                f"SELECT {_COMMAND_COLUMNS} FROM commands ORDER BY updated_at DESC LIMIT ?", n_commands)]
        event_rows: list[EventView] = []
        if "alerts" in tables:
            event_rows += [_alert_view(r) for r in q(
                f"SELECT {_ALERT_COLUMNS} FROM alerts ORDER BY id DESC LIMIT ?", n_events)]
        if "deadletters" in tables:
            event_rows += [EventView(r[0], "deadletter", r[1], f"{r[2]}: {r[3]}") for r in q(
                "SELECT received_at, device_id, reason, detail FROM deadletters ORDER BY id DESC LIMIT ?", n_events)]
        event_rows.sort(key=lambda e: -e.ts)

        total_gaps = sum(int(v or 0) for v in gaps.values())
        total_dead = q("SELECT COUNT(*) FROM deadletters")[0][0] if "deadletters" in tables else 0
        summary = Summary(
            devices_total=len(devices), online=sum(1 for d in devices if d.online),
            readings_in_per_s=float(stats.get("readings_in_per_s", in_rate)), persisted_per_s=persisted_rate,
            rate_history=tuple(self._rates), duplicates=int(stats.get("duplicates", 0)), gaps=total_gaps,
            deadletters=int(total_dead), ingest_lag_s=stats.get("lag_s") if live else None,
            critical_alerts=sum(c for c, _ in alert_counts.values()),
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
        except (sqlite3.Error, FileNotFoundError):
            self.close()
            return DeviceDetail(id=device_id, taken_at=now, known=False, window_s=window_s, buckets=buckets)

    def _load_device(self, device_id: str, now: float, window_s: float, buckets: int, rows: int) -> DeviceDetail:
        conn = self._db()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        snapshot_row = self._last_devices.get(device_id)
        presence_row = device_presence(conn, device_id) if "devices" in tables else None
        since = now - window_s
        metrics: tuple[MetricHistory, ...] = ()
        if "readings" in tables:
            metrics = metric_history(conn, device_id, since, window_s / max(1, buckets))
        if "latest" in tables:
            latest = dict(conn.execute("SELECT metric, value FROM latest WHERE device_id = ?", (device_id,)).fetchall())
            seen = {m.name for m in metrics}
            metrics = tuple(replace(m, latest=latest.get(m.name, m.latest)) for m in metrics) + tuple(
                MetricHistory(name, value) for name, value in sorted(latest.items()) if name not in seen)
        presence = presence_history(conn, device_id, rows) if "presence_events" in tables else ()
        commands = device_commands(conn, device_id, rows) if "commands" in tables else ()
        alerts = device_alerts(conn, device_id, rows) if "alerts" in tables else ()
        known = snapshot_row is not None or presence_row is not None or bool(metrics)
        return DeviceDetail(
            id=device_id, taken_at=now, known=known, device=snapshot_row,
            state_since=presence_row[0] if presence_row else None, state_reason=presence_row[1] if presence_row else "",
            boot=presence_row[2] if presence_row else None, window_s=window_s, buckets=buckets, metrics=metrics, presence=presence,
            commands=commands, alerts=alerts,
        )


# ---------------------------------------------------------------------------- read queries
# Small read-only queries of the dashboard; each takes an open connection and returns plain values.

ALERT_WINDOW_S = 3600.0
"""Alerts younger than this count for a device's problems and the header's critical count."""

_COMMAND_COLUMNS = "id, device_id, name, state, updated_at, created_at, detail, args, result"
_ALERT_COLUMNS = "received_at, device_id, severity, code, message"


def _alert_view(row: tuple) -> EventView:  # type: ignore[type-arg]
    received_at, device_id, severity, code, message = row
    return EventView(received_at, "alert", device_id, f"{code} {message}".strip(), severity=severity)


def recent_alert_counts(conn: sqlite3.Connection, since: float) -> dict[str, tuple[int, int]]:
    """Per device: (critical alerts, all alerts) received since ``since``."""
    rows = conn.execute(
        "SELECT device_id, SUM(severity = 'critical'), COUNT(*) FROM alerts WHERE received_at >= ? GROUP BY device_id",
        (since,)).fetchall()
    return {dev: (int(crit or 0), int(total)) for dev, crit, total in rows}


def reset_counts(conn: sqlite3.Connection, tables: set[str]) -> dict[str, int]:
    """Per device: how often its boot counter went backwards (a reset).

    Hook: the hub records a reset as a presence event with reason ``reset`` once issue 11's boot
    handling lands; until then no such rows exist and every count is 0.
    """
    if "presence_events" not in tables:
        return {}
    rows = conn.execute("SELECT device_id, COUNT(*) FROM presence_events WHERE reason = 'reset' GROUP BY device_id")
    return {dev: int(n) for dev, n in rows}


def device_presence(conn: sqlite3.Connection, device_id: str) -> tuple[float, str, int | None] | None:
    """(state since, reason, boot) of one device, or None when the hub never heard of it."""
    return conn.execute("SELECT state_since, state_reason, boot FROM devices WHERE device_id = ?",
                        (device_id,)).fetchone()


def metric_history(conn: sqlite3.Connection, device_id: str, since: float, bucket_s: float) -> tuple[MetricHistory, ...]:
    """Each metric of one device since ``since`` as the mean of each ``bucket_s`` bucket (the index on
    (device_id, ts) keeps this one range scan; an hour at 2 readings/s is a few thousand rows)."""
    bucket_s = max(bucket_s, 1e-3)
    rows = conn.execute(
        "SELECT metric, CAST((ts - ?) / ? AS INTEGER) AS b, AVG(value), MIN(value), MAX(value) FROM readings"
        " WHERE device_id = ? AND ts >= ? GROUP BY metric, b ORDER BY metric, b",
        (since, bucket_s, device_id, since)).fetchall()
    points: dict[str, list[tuple[float, float]]] = {}
    ranges: dict[str, tuple[float, float]] = {}
    for metric, bucket, mean, low, high in rows:
        points.setdefault(metric, []).append((since + bucket * bucket_s, float(mean)))
        lo, hi = ranges.get(metric, (low, high))
        ranges[metric] = (min(lo, low), max(hi, high))
    return tuple(MetricHistory(name, pts[-1][1], tuple(pts), *ranges[name]) for name, pts in points.items())


def presence_history(conn: sqlite3.Connection, device_id: str, limit: int) -> tuple[PresenceView, ...]:
    """The newest ``limit`` online/offline transitions of one device, newest first."""
    return tuple(PresenceView(*r) for r in conn.execute(
        "SELECT ts, state, reason, boot FROM presence_events WHERE device_id = ? ORDER BY ts DESC, id DESC LIMIT ?",
        (device_id, limit)))


def device_commands(conn: sqlite3.Connection, device_id: str, limit: int) -> tuple[CommandView, ...]:
    """The newest ``limit`` commands of one device, newest first, with their current state."""
    return tuple(CommandView(*r) for r in conn.execute(
        f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE device_id = ? ORDER BY created_at DESC LIMIT ?",
        (device_id, limit)))


def device_alerts(conn: sqlite3.Connection, device_id: str, limit: int) -> tuple[EventView, ...]:
    """The newest ``limit`` alerts of one device, newest first."""
    return tuple(_alert_view(r) for r in conn.execute(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE device_id = ? ORDER BY id DESC LIMIT ?", (device_id, limit)))
