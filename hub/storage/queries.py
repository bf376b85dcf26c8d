"""Read queries of the CLI, the dashboard, the exporter and the tests.

Each function takes a connection (usually read-only, see :func:`hub.storage.connection.reading`)
and returns plain rows. The schema exists on every opened database, so nothing here checks
whether a table exists.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hub.storage.connection import dict_rows
from hub.storage.registry import PrincipalStore
from hub.storage.status import Heartbeat, StatusStore

READING_COLUMNS = ("device_id", "metric", "value", "ts", "received_at", "boot", "seq", "idx", "skewed")
"""The columns of a reading as the CLI, the exporter and the tests see it."""


def readings(conn: sqlite3.Connection, device_id: str, metric: str | None = None, since: float | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """Readings of one device in time order, optionally of one metric and since a Unix time."""
    sql = f"SELECT {', '.join(READING_COLUMNS)} FROM readings WHERE device_id = ?"
    params: list[Any] = [device_id]
    if since is not None:
        sql += " AND ts >= ?"
        params.append(since)
    if metric is not None:
        sql += " AND metric = ?"
        params.append(metric)
    sql += " ORDER BY ts, seq, idx"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return dict_rows(conn, sql, params)


def latest(conn: sqlite3.Connection, device_id: str | None = None) -> list[dict[str, Any]]:
    """The latest value of each metric, for one device or all."""
    if device_id is None:
        return dict_rows(conn, "SELECT device_id, metric, ts, value, received_at FROM latest ORDER BY device_id, metric")
    return dict_rows(conn, "SELECT device_id, metric, ts, value, received_at FROM latest WHERE device_id = ?"
                     " ORDER BY metric", [device_id])


def deadletters(conn: sqlite3.Connection, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest dead letters first; the payload as hex."""
    sql = "SELECT id, device_id, topic, reason, detail, hex(payload) AS payload_hex, size, received_at FROM deadletters"
    params: list[Any] = []
    if reason is not None:
        sql += " WHERE reason = ?"
        params.append(reason)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return dict_rows(conn, sql, params)


def deadletter_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Dead letters per reason."""
    return dict(conn.execute("SELECT reason, COUNT(*) FROM deadletters GROUP BY reason").fetchall())


def gaps(conn: sqlite3.Connection, device_id: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
    """Recorded gaps, optionally of one device and only the open ones."""
    sql = "SELECT id, device_id, boot, from_seq, to_seq, missing, detected_at, closed_at FROM gaps WHERE 1=1"
    params: list[Any] = []
    if device_id is not None:
        sql += " AND device_id = ?"
        params.append(device_id)
    if open_only:
        sql += " AND missing > 0"
    return dict_rows(conn, sql + " ORDER BY device_id, boot, from_seq", params)


def presence(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Presence rows by device id."""
    return {r["device_id"]: r for r in dict_rows(
        conn, "SELECT device_id, state, state_reason, state_since, last_seen, fw, boot, enc, interval_s FROM devices")}


def presence_events(conn: sqlite3.Connection, device_id: str) -> list[dict[str, Any]]:
    """Online/offline transitions of one device, oldest first."""
    return dict_rows(conn, "SELECT id, device_id, state, reason, boot, ts FROM presence_events WHERE device_id = ?"
                     " ORDER BY id", [device_id])


def alerts(conn: sqlite3.Connection, device_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest alerts first, optionally of one device."""
    sql = "SELECT id, device_id, boot, seq, ts, code, severity, message, received_at FROM alerts"
    params: list[Any] = []
    if device_id is not None:
        sql += " WHERE device_id = ?"
        params.append(device_id)
    return dict_rows(conn, sql + " ORDER BY id DESC LIMIT ?", [*params, limit])


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per table (for tests and the migration check)."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {name: int(conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]) for name in names}


# ---------------------------------------------------------------------- export


def _reading_bounds(since: float | None, until: float | None, device_id: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    if device_id is not None:
        clauses.append("device_id = ?")
        params.append(device_id)
    return " AND ".join(clauses) or "1=1", params


def count_readings(conn: sqlite3.Connection, since: float | None = None, until: float | None = None,
                   device_id: str | None = None) -> int:
    """How many readings lie within these bounds."""
    where, params = _reading_bounds(since, until, device_id)
    return int(conn.execute(f"SELECT COUNT(*) FROM readings WHERE {where}", params).fetchone()[0])


def iter_readings(conn: sqlite3.Connection, since: float | None = None, until: float | None = None,
                  device_id: str | None = None, chunk: int = 5_000) -> Iterator[list[tuple[Any, ...]]]:
    """Readings in chunks of ``chunk`` tuples in :data:`READING_COLUMNS` order, keyset-paginated (flat memory)."""
    where, params = _reading_bounds(since, until, device_id)
    last_id = 0
    while True:
        rows = conn.execute(
            f"SELECT id, {', '.join(READING_COLUMNS)} FROM readings WHERE {where} AND id > ? ORDER BY id LIMIT ?",
            [*params, last_id, chunk]).fetchall()
        if not rows:
            return
        last_id = rows[-1][0]
        yield [r[1:] for r in rows]


# ---------------------------------------------------------------------- the dashboard's overview


@dataclass(frozen=True, slots=True)
class OverviewRows:
    """Everything the fleet overview shows, as read in one go."""

    heartbeats: list[Heartbeat]
    readings_mark: int
    """Grows by one per stored reading: the difference of two marks is the readings stored between them."""
    messages_mark: int
    groups: dict[str, str | None]
    presence: dict[str, tuple[str, float | None, str | None]]
    gaps: dict[str, int]
    births: dict[str, int]
    deadletters_by_device: dict[str | None, int]
    latest: list[tuple[str, str, float]]
    commands: list[tuple[str, str, str, str, float]]
    alerts: list[tuple[float, str, str, str, str]]
    deadletter_events: list[tuple[float, str | None, str, str]]
    deadletters_total: int


def overview(conn: sqlite3.Connection, n_commands: int, n_events: int) -> OverviewRows:
    """The rows of one dashboard snapshot: small tables and indexed lookups only."""
    q = lambda sql, *p: conn.execute(sql, p).fetchall()  # noqa: E731
    return OverviewRows(
        heartbeats=StatusStore(conn).heartbeats(),
        readings_mark=int(q("SELECT COALESCE(MAX(id), 0) FROM readings")[0][0]),
        messages_mark=int(q("SELECT COALESCE(MAX(id), 0) FROM messages")[0][0]),
        groups=PrincipalStore(conn).device_groups(),
        presence={r[0]: (r[1], r[2], r[3]) for r in q("SELECT device_id, state, last_seen, fw FROM devices")},
        gaps={d: int(n or 0) for d, n in q("SELECT device_id, SUM(missing) FROM gaps GROUP BY device_id")},
        births=dict(q("SELECT device_id, COUNT(*) FROM presence_events WHERE state = 'online' GROUP BY device_id")),
        deadletters_by_device=dict(q("SELECT device_id, COUNT(*) FROM deadletters GROUP BY device_id")),
        latest=[(d, m, v) for d, m, v in q("SELECT device_id, metric, value FROM latest")],
        commands=[tuple(r) for r in q(  # type: ignore[misc]
            "SELECT id, device_id, name, state, updated_at FROM commands ORDER BY updated_at DESC LIMIT ?", n_commands)],
        alerts=[tuple(r) for r in q(  # type: ignore[misc]
            "SELECT received_at, device_id, severity, code, message FROM alerts ORDER BY id DESC LIMIT ?", n_events)],
        deadletter_events=[tuple(r) for r in q(  # type: ignore[misc]
            "SELECT received_at, device_id, reason, detail FROM deadletters ORDER BY id DESC LIMIT ?", n_events)],
        deadletters_total=int(q("SELECT COUNT(*) FROM deadletters")[0][0]),
    )
