"""Read queries of the CLI, the dashboard, the exporter and the tests.

Each function takes a connection (usually read-only, see :func:`hub.storage.connection.reading`)
and returns plain rows. The schema exists on every opened database, so nothing here checks
whether a table exists.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hub.storage.connection import Connection, dict_rows
from hub.storage.dialect import is_pg
from hub.storage.registry import PrincipalStore
from hub.storage.rollups import Period
from hub.storage.runs import message_meta
from hub.storage.schema import RUN_OF_SAMPLE
from hub.storage.status import Heartbeat, StatusStore
from hub.storage.values import SQL_UNPACK, unpack

_UNPACK = SQL_UNPACK.format(col="s.value")

READING_COLUMNS = ("device_id", "metric", "value", "ts", "received_at", "boot", "seq", "idx", "skewed")
"""The columns of a reading as the CLI, the exporter and the tests see it."""


_READINGS_FROM = (
    " FROM series r JOIN metric_keys m ON m.id = r.metric JOIN samples s ON s.series = r.id"
    " LEFT JOIN message_runs k ON " + RUN_OF_SAMPLE)
_READINGS_SELECT = ("SELECT m.metric, s.value, s.ts, k.received_at, s.boot, s.seq, s.idx, k.skewed, k.first_seq,"
                    " k.offsets")


def _received(received: int | None, first: int, offsets: bytes, seq: int) -> float | None:
    """A reading's receive time in seconds from its message's run (None when the key is gone)."""
    return None if received is None else message_meta(received, 0, first, offsets, seq)[0] / 1000.0


def _readings_sql(metric: str | None, since: float | None, limit: int | None) -> str:
    sql = _READINGS_SELECT + _READINGS_FROM + " WHERE r.device = (SELECT id FROM device_keys WHERE device_id = ?)"
    if metric is not None:
        sql += " AND m.metric = ?"
    if since is not None:
        sql += " AND s.ts >= ?"
    sql += " ORDER BY s.ts, s.seq, s.idx"
    if limit is not None:
        sql += " LIMIT ?"
    return sql


def _readings_params(device_id: str, metric: str | None, since: float | None, limit: int | None) -> list[Any]:
    return [device_id, *([metric] if metric is not None else []), *([round(since * 1000)] if since is not None else []),
            *([limit] if limit is not None else [])]


def readings(conn: Connection, device_id: str, metric: str | None = None, since: float | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """Readings of one device in time order, optionally of one metric and since a Unix time.

    One device and one metric over a time range is one range scan of ``samples``.
    """
    rows = conn.execute(_readings_sql(metric, since, limit), _readings_params(device_id, metric, since, limit))
    return [{"device_id": device_id, "metric": mt, "value": unpack(v), "ts": ts / 1000.0,
             "received_at": _received(rcv, first, offsets, seq), "boot": boot, "seq": seq, "idx": idx,
             "skewed": skewed or 0}
            for mt, v, ts, rcv, boot, seq, idx, skewed, first, offsets in rows]


ROLLUP_COLUMNS = ("device_id", "metric", "period", "start", "count", "min", "max", "mean", "last", "last_ts")
"""The columns of an aggregate row as the CLI and the exporter see them (times in Unix seconds)."""


def _rollup_row(device_id: str, metric: str, period: int, start: int, count: int, low: int | float, high: int | float,
                total: float, last: int | float, last_dt: int) -> dict[str, Any]:
    return {"device_id": device_id, "metric": metric, "period": period, "start": start / 1000.0, "count": count,
            "min": unpack(low), "max": unpack(high), "mean": total / count, "last": unpack(last),
            "last_ts": (start + last_dt) / 1000.0}


def rollups(conn: Connection, device_id: str, period: Period, metric: str | None = None,
            since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Aggregates of one device per ``period`` (count, min, max, mean, last), oldest first.

    They outlive the raw readings: retention deletes readings, not aggregates.
    """
    sql = ("SELECT m.metric, g.start, g.count, g.low, g.high, g.total, g.last, g.last_dt FROM series r"
           " JOIN metric_keys m ON m.id = r.metric JOIN rollups g ON g.series = r.id AND g.period = ?"
           " WHERE r.device = (SELECT id FROM device_keys WHERE device_id = ?)")
    params: list[Any] = [int(period), device_id]
    if metric is not None:
        sql += " AND m.metric = ?"
        params.append(metric)
    if since is not None:
        sql += " AND g.start >= ?"
        params.append(round(since * 1000) // (int(period) * 1000) * int(period) * 1000)  # the period holding since
    sql += " ORDER BY g.start, m.metric"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [_rollup_row(device_id, mt, int(period), *rest) for mt, *rest in conn.execute(sql, params)]


def _rollup_bounds(period: Period, since: float | None, until: float | None,
                   device_id: str | None) -> tuple[str, list[Any]]:
    clauses, params = ["g.period = ?"], [int(period)]
    if since is not None:
        clauses.append("g.start >= ?")
        params.append(round(since * 1000) // (int(period) * 1000) * int(period) * 1000)
    if until is not None:
        clauses.append("g.start < ?")
        params.append(round(until * 1000))
    if device_id is not None:
        clauses.append("r.device = (SELECT id FROM device_keys WHERE device_id = ?)")
        params.append(device_id)
    return " AND ".join(clauses), params


def count_rollups(conn: Connection, period: Period, since: float | None = None, until: float | None = None,
                  device_id: str | None = None) -> int:
    """How many aggregate rows lie within these bounds."""
    where, params = _rollup_bounds(period, since, until, device_id)
    return int(conn.execute(f"SELECT COUNT(*) FROM rollups g JOIN series r ON r.id = g.series WHERE {where}",
                            params).fetchone()[0])


def iter_rollups(conn: Connection, period: Period, since: float | None = None, until: float | None = None,
                 device_id: str | None = None, chunk: int = 5_000) -> Iterator[list[tuple[Any, ...]]]:
    """Aggregate rows in chunks of tuples in :data:`ROLLUP_COLUMNS` order, by series then time (keyset-paginated)."""
    where, params = _rollup_bounds(period, since, until, device_id)
    names = _series_names(conn)
    last = (0, 0)
    while True:
        rows = conn.execute(
            "SELECT g.series, g.start, g.count, g.low, g.high, g.total, g.last, g.last_dt FROM rollups g"
            f" JOIN series r ON r.id = g.series WHERE {where} AND (g.series, g.start) > (?, ?)"
            " ORDER BY g.series, g.period, g.start LIMIT ?", [*params, *last, chunk]).fetchall()
        if not rows:
            return
        last = rows[-1][:2]
        yield [tuple(_rollup_row(*names[sid], int(period), *rest).values()) for sid, *rest in rows]


def _series_names(conn: Connection) -> dict[int, tuple[str, str]]:
    return {sid: (device, metric) for sid, device, metric in conn.execute(
        "SELECT r.id, d.device_id, m.metric FROM series r JOIN device_keys d ON d.id = r.device"
        " JOIN metric_keys m ON m.id = r.metric")}


def readings_plan(conn: Connection, device_id: str, metric: str | None = None,
                  since: float | None = None) -> str:
    """SQLite's plan for :func:`readings` (tests and the bench check it is a range scan)."""
    if is_pg(conn):
        sql = "EXPLAIN " + _readings_sql(metric, since, None)
        return " | ".join(str(r[0]).strip() for r in conn.execute(sql, _readings_params(device_id, metric, since, None)))
    sql = "EXPLAIN QUERY PLAN " + _readings_sql(metric, since, None)
    return " | ".join(str(r[-1]) for r in conn.execute(sql, _readings_params(device_id, metric, since, None)))


def readings_stored(conn: Connection) -> int:
    """Readings stored since the file was created (retention does not lower it): rates from two looks."""
    return int(conn.execute("SELECT value FROM counters WHERE name = 'readings'").fetchone()[0])


def messages_stored(conn: Connection) -> int:
    """Messages stored since the file was created (retention does not lower it)."""
    return int(conn.execute("SELECT value FROM counters WHERE name = 'messages'").fetchone()[0])


def latest(conn: Connection, device_id: str | None = None) -> list[dict[str, Any]]:
    """The latest value of each metric, for one device or all."""
    if device_id is None:
        return dict_rows(conn, "SELECT device_id, metric, ts, value, received_at FROM latest ORDER BY device_id, metric")
    return dict_rows(conn, "SELECT device_id, metric, ts, value, received_at FROM latest WHERE device_id = ?"
                     " ORDER BY metric", [device_id])


def deadletters(conn: Connection, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest dead letters first; the payload as hex."""
    sql = ("SELECT id, device_id, topic, reason, detail, hex(payload) AS payload_hex, size, received_at, boot, seq"
           " FROM deadletters")
    params: list[Any] = []
    if reason is not None:
        sql += " WHERE reason = ?"
        params.append(reason)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return dict_rows(conn, sql, params)


def deadletter_counts(conn: Connection) -> dict[str, int]:
    """Dead letters per reason."""
    return dict(conn.execute("SELECT reason, COUNT(*) FROM deadletters GROUP BY reason").fetchall())


def gaps(conn: Connection, device_id: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
    """Recorded gaps, optionally of one device and only the open ones."""
    sql = "SELECT id, device_id, boot, from_seq, to_seq, missing, detected_at, closed_at, dropped_at FROM gaps WHERE 1=1"
    params: list[Any] = []
    if device_id is not None:
        sql += " AND device_id = ?"
        params.append(device_id)
    if open_only:
        sql += " AND missing > 0"
    return dict_rows(conn, sql + " ORDER BY device_id, boot, from_seq", params)


def presence(conn: Connection) -> dict[str, dict[str, Any]]:
    """Presence rows by device id."""
    return {r["device_id"]: r for r in dict_rows(
        conn, "SELECT device_id, state, state_reason, state_since, last_seen, fw, boot, enc, interval_s, incarnation,"
              " boot_ts FROM devices")}


def resets(conn: Connection, device_id: str | None = None) -> list[dict[str, Any]]:
    """Recorded resets (births whose boot went back: firmware_protocol.md 4.1), oldest first."""
    sql = "SELECT id, device_id, incarnation, old_boot, new_boot, ts FROM device_resets"
    if device_id is None:
        return dict_rows(conn, sql + " ORDER BY id")
    return dict_rows(conn, sql + " WHERE device_id = ? ORDER BY id", [device_id])


def presence_events(conn: Connection, device_id: str) -> list[dict[str, Any]]:
    """Online/offline transitions of one device, oldest first."""
    return dict_rows(conn, "SELECT id, device_id, state, reason, boot, ts FROM presence_events WHERE device_id = ?"
                     " ORDER BY id", [device_id])


def alerts(conn: Connection, device_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest alerts first, optionally of one device."""
    sql = "SELECT id, device_id, boot, seq, ts, code, severity, message, received_at FROM alerts"
    params: list[Any] = []
    if device_id is not None:
        sql += " WHERE device_id = ?"
        params.append(device_id)
    return dict_rows(conn, sql + " ORDER BY id DESC LIMIT ?", [*params, limit])


def table_counts(conn: Connection) -> dict[str, int]:
    """Rows per table (for tests and the migration check)."""
    if is_pg(conn):
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_type = 'BASE TABLE' AND table_name <> 'schema_version' ORDER BY table_name")]
    else:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {name: int(conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]) for name in names}


def space_by_table(conn: Connection) -> dict[str, int]:
    """Bytes on disk per table and index (SQLite's ``dbstat``, empty when this SQLite lacks it; PostgreSQL's
    relation sizes)."""
    if is_pg(conn):
        return dict(conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i') ORDER BY 2 DESC").fetchall())
    try:
        return dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall())
    except sqlite3.OperationalError:
        return {}


# ---------------------------------------------------------------------- export


def _reading_bounds(since: float | None, until: float | None, device_id: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("s.ts >= ?")
        params.append(round(since * 1000))
    if until is not None:
        clauses.append("s.ts < ?")
        params.append(round(until * 1000))
    if device_id is not None:
        clauses.append("r.device = (SELECT id FROM device_keys WHERE device_id = ?)")
        params.append(device_id)
    return " AND ".join(clauses) or "1=1", params


def count_readings(conn: Connection, since: float | None = None, until: float | None = None,
                   device_id: str | None = None) -> int:
    """How many readings lie within these bounds."""
    where, params = _reading_bounds(since, until, device_id)
    return int(conn.execute(f"SELECT COUNT(*) FROM samples s JOIN series r ON r.id = s.series WHERE {where}",
                            params).fetchone()[0])


def iter_readings(conn: Connection, since: float | None = None, until: float | None = None,
                  device_id: str | None = None, chunk: int = 5_000) -> Iterator[list[tuple[Any, ...]]]:
    """Readings in chunks of ``chunk`` tuples in :data:`READING_COLUMNS` order, keyset-paginated (flat memory).

    Ordered by device and metric (series), then time: the table's own order, so no sort.
    """
    where, params = _reading_bounds(since, until, device_id)
    names = _series_names(conn)
    last: tuple[int, int, int, int, int] = (0, 0, 0, 0, -1)
    while True:
        rows = conn.execute(
            "SELECT s.series, s.ts, s.boot, s.seq, s.idx, s.value, k.received_at, k.skewed, k.first_seq, k.offsets"
            " FROM samples s JOIN series r ON r.id = s.series LEFT JOIN message_runs k ON " + RUN_OF_SAMPLE +
            f" WHERE {where} AND (s.series, s.ts, s.boot, s.seq, s.idx) > (?, ?, ?, ?, ?)"
            " ORDER BY s.series, s.ts, s.boot, s.seq, s.idx LIMIT ?", [*params, *last, chunk]).fetchall()
        if not rows:
            return
        last = rows[-1][:5]
        out = []
        for series, ts, boot, seq, idx, value, rcv, skewed, first, offsets in rows:
            device, metric = names[series]
            out.append((device, metric, unpack(value), ts / 1000.0, _received(rcv, first, offsets, seq), boot, seq,
                        idx, skewed or 0))
        yield out


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
    commands: list[tuple[str, str, str, str, float, float, str, str, str]]
    """(id, device_id, name, state, updated_at, created_at, detail, args JSON, result JSON), newest first."""
    alerts: list[tuple[float, str, str, str, str]]
    deadletter_events: list[tuple[float, str | None, str, str]]
    deadletters_total: int
    resets: dict[str, int]
    """Resets (new incarnations) per device that had any: how often its boot counter went backwards."""
    reset_events: list[tuple[float, str, int | None, int, int]]
    """(ts, device_id, old_boot, new_boot, incarnation), newest first."""
    alert_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per device: (critical alerts, all alerts) received since the overview's ``alerts_since``."""


COMMAND_VIEW_COLUMNS = "id, device_id, name, state, updated_at, created_at, detail, args, result"
ALERT_VIEW_COLUMNS = "received_at, device_id, severity, code, message"


def overview(conn: Connection, n_commands: int, n_events: int, alerts_since: float = 0.0) -> OverviewRows:
    """The rows of one dashboard snapshot: small tables and indexed lookups only."""
    q = lambda sql, *p: conn.execute(sql, p).fetchall()  # noqa: E731
    return OverviewRows(
        heartbeats=StatusStore(conn).heartbeats(),
        readings_mark=readings_stored(conn),
        messages_mark=messages_stored(conn),
        groups=PrincipalStore(conn).device_groups(),
        presence={r[0]: (r[1], r[2], r[3]) for r in q("SELECT device_id, state, last_seen, fw FROM devices")},
        gaps={d: int(n or 0) for d, n in q("SELECT device_id, SUM(missing) FROM gaps GROUP BY device_id")},
        births=dict(q("SELECT device_id, COUNT(*) FROM presence_events WHERE state = 'online' GROUP BY device_id")),
        deadletters_by_device=dict(q("SELECT device_id, COUNT(*) FROM deadletters GROUP BY device_id")),
        latest=[(d, m, v) for d, m, v in q("SELECT device_id, metric, value FROM latest")],
        commands=[tuple(r) for r in q(  # type: ignore[misc]
            f"SELECT {COMMAND_VIEW_COLUMNS} FROM commands ORDER BY updated_at DESC LIMIT ?", n_commands)],
        alerts=[tuple(r) for r in q(  # type: ignore[misc]
            f"SELECT {ALERT_VIEW_COLUMNS} FROM alerts ORDER BY id DESC LIMIT ?", n_events)],
        deadletter_events=[tuple(r) for r in q(  # type: ignore[misc]
            "SELECT received_at, device_id, reason, detail FROM deadletters ORDER BY id DESC LIMIT ?", n_events)],
        deadletters_total=int(q("SELECT COUNT(*) FROM deadletters")[0][0]),
        resets=dict(q("SELECT device_id, incarnation FROM devices WHERE incarnation > 0")),
        reset_events=[tuple(r) for r in q(  # type: ignore[misc]
            "SELECT ts, device_id, old_boot, new_boot, incarnation FROM device_resets ORDER BY id DESC LIMIT ?",
            n_events)],
        alert_counts={d: (int(c or 0), int(n)) for d, c, n in q(
            "SELECT device_id, SUM(CASE WHEN severity = 'critical' THEN 1 ELSE 0 END), COUNT(*) FROM alerts WHERE received_at >= ? GROUP BY device_id",
            alerts_since)},
    )


# ---------------------------------------------------------------------- the dashboard's device screen


@dataclass(frozen=True, slots=True)
class DeviceDetailRows:
    """Everything the device screen shows about one device, as read in one go."""

    presence: tuple[float, str, int | None] | None
    """(state since, reason, boot), None when the hub never heard of the device."""
    history: list[tuple[str, int, float, float, float]]
    """(metric, bucket number, mean, min, max) per metric and bucket since ``since``, in order."""
    latest: dict[str, float]
    presence_events: list[tuple[float, str, str, int | None]]
    """(ts, state, reason, boot), newest first."""
    commands: list[tuple[str, str, str, str, float, float, str, str, str]]
    """As :attr:`OverviewRows.commands`, newest first."""
    alerts: list[tuple[float, str, str, str, str]]
    """As :attr:`OverviewRows.alerts`, newest first."""


def device_detail(conn: Connection, device_id: str, since: float, bucket_s: float, limit: int) -> DeviceDetailRows:
    """One device: metric history since ``since`` as per-``bucket_s`` mean/min/max (one range scan of the
    (device_id, ts) index: an hour at 2 readings/s is a few thousand rows), its presence, and the newest
    ``limit`` presence events, commands and alerts."""
    q = lambda sql, *p: conn.execute(sql, p).fetchall()  # noqa: E731
    bucket_s = max(bucket_s, 1e-3)
    pg = is_pg(conn)
    unpacked = "s.value" if pg else _UNPACK  # a plain double on PostgreSQL
    bucket = "CAST(trunc((s.ts / 1000.0 - ?) / ?) AS BIGINT)" if pg else "CAST((s.ts / 1000.0 - ?) / ? AS INTEGER)"
    return DeviceDetailRows(
        presence=conn.execute("SELECT state_since, state_reason, boot FROM devices WHERE device_id = ?",
                              (device_id,)).fetchone(),
        history=[tuple(r) for r in q(  # type: ignore[misc]
            # straight from samples, series by series (a range scan of the clustered key), not the readings view
            f"SELECT m.metric, {bucket} AS b, AVG({unpacked}), MIN({unpacked}),"
            f" MAX({unpacked}) FROM series r JOIN metric_keys m ON m.id = r.metric JOIN samples s ON s.series = r.id"
            " WHERE r.device = (SELECT id FROM device_keys WHERE device_id = ?) AND s.ts >= ?"
            " GROUP BY m.metric, b ORDER BY m.metric, b", since, bucket_s, device_id, round(since * 1000))],
        latest=dict(q("SELECT metric, value FROM latest WHERE device_id = ?", device_id)),
        presence_events=[tuple(r) for r in q(  # type: ignore[misc]
            "SELECT ts, state, reason, boot FROM presence_events WHERE device_id = ? ORDER BY ts DESC, id DESC LIMIT ?",
            device_id, limit)],
        commands=[tuple(r) for r in q(  # type: ignore[misc]
            f"SELECT {COMMAND_VIEW_COLUMNS} FROM commands WHERE device_id = ? ORDER BY created_at DESC LIMIT ?",
            device_id, limit)],
        alerts=[tuple(r) for r in q(  # type: ignore[misc]
            f"SELECT {ALERT_VIEW_COLUMNS} FROM alerts WHERE device_id = ? ORDER BY id DESC LIMIT ?", device_id, limit)],
    )
