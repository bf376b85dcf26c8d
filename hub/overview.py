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
        elif beats and all(b["stats"].get("stopped") for b in beats):
            last = max(beats, key=lambda b: b["updated_at"])
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["updated_at"]))
            message = f"hub stopped cleanly at {when} (worker {last['worker']})"
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
                deadletters=int(dead.get(dev, 0)),
            ))

        command_rows: list[CommandView] = []
        if "commands" in tables:
            command_rows = [CommandView(*r) for r in q(
                "SELECT id, device_id, name, state, updated_at FROM commands ORDER BY updated_at DESC LIMIT ?", n_commands)]
        event_rows: list[EventView] = []
        if "alerts" in tables:
            event_rows += [EventView(r[0], "alert", r[1], f"{r[2]} {r[3]} {r[4]}".strip()) for r in q(
                "SELECT received_at, device_id, severity, code, message FROM alerts ORDER BY id DESC LIMIT ?", n_events)]
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
        )
        return Snapshot(taken_at=now, hub_alive=bool(live), hub_message=message, summary=summary,
                        devices=tuple(devices), commands=tuple(command_rows), events=tuple(event_rows[:n_events]))
