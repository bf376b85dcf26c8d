"""All SQLite access of the hub: schema, batched writes and the read queries of the CLI.

One writer thread owns a :class:`HubStore` and wraps each batch in :meth:`HubStore.transaction`.
Readers (CLI, dashboard, tests) use the query functions at the bottom on their own
connection; WAL mode means they never block the writer.

Tables
    messages        one row per stored telemetry/alert message; UNIQUE(device_id, boot, seq)
                    is what makes redelivery store nothing new
    readings        one row per reading, INDEX(device_id, ts); written only in the transaction that
                    inserted its message, so the messages key alone keeps readings exactly-once
    latest          latest value per (device_id, metric), upserted per batch
    alerts          alert messages
    streams         per (device_id, boot): first and highest seq seen
    gaps            missing seq ranges per (device_id, boot); shrink as late messages arrive;
                    ``dropped_at`` set once the device declared them given up
    deadletters     refused input with raw bytes, topic, reason, detail; ``boot``/``seq`` when the
                    payload had readable ones (then UNIQUE with device_id: a seq is dealt with once)
    command_replies device replies to commands (the command bridge builds on this)
    devices         presence: state, last_seen, fw, boot, enc, interval_s; ``incarnation`` (resets
                    so far) and ``boot_ts`` (power-up time of the current boot, for uptime stamps)
    device_resets   one row per reset: a birth whose boot went back (firmware_protocol.md 4.1)
    presence_events online/offline transitions

Every ``boot`` column of messages, readings, alerts, streams, gaps and deadletters holds the
stream key ``incarnation * 2**32 + boot`` (:mod:`hub.incarnations`): the device's own boot for a
device that never reset.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.registry import Registry, Role, open_db
from hub.gaps import Gap, SeqTracker
from protocol.limits import LIMITS

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    received_at REAL NOT NULL,
    skewed INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, boot, seq)
);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    skewed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS readings_device_ts ON readings (device_id, ts);
CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    code TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (device_id, boot, seq)
);
CREATE TABLE IF NOT EXISTS streams (
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL,
    PRIMARY KEY (device_id, boot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    missing INTEGER NOT NULL,
    detected_at REAL NOT NULL,
    closed_at REAL,
    dropped_at REAL
);
CREATE INDEX IF NOT EXISTS gaps_open ON gaps (device_id, boot) WHERE missing > 0;
CREATE TABLE IF NOT EXISTS deadletters (
    id INTEGER PRIMARY KEY,
    device_id TEXT,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    boot INTEGER,
    seq INTEGER
);
CREATE INDEX IF NOT EXISTS deadletters_reason ON deadletters (reason);
CREATE TABLE IF NOT EXISTS command_replies (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    result TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS command_replies_cmd ON command_replies (command_id);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    state_reason TEXT NOT NULL,
    state_since REAL NOT NULL,
    last_seen REAL,
    fw TEXT,
    boot INTEGER,
    enc TEXT,
    interval_s INTEGER,
    incarnation INTEGER NOT NULL DEFAULT 0,
    boot_ts INTEGER
);
CREATE TABLE IF NOT EXISTS device_resets (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    old_boot INTEGER,
    new_boot INTEGER NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS presence_events (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    boot INTEGER,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS presence_events_device ON presence_events (device_id, ts);
"""

ADDED_COLUMNS = {
    "gaps": ("dropped_at REAL",),
    "deadletters": ("boot INTEGER", "seq INTEGER"),
    "devices": ("incarnation INTEGER NOT NULL DEFAULT 0", "boot_ts INTEGER"),
}
"""Columns contract v2 added to tables an older hub created (the storage package's migrations take these over)."""

SCHEMA_V2_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS deadletters_key ON deadletters (device_id, boot, seq) WHERE seq IS NOT NULL;
"""


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring tables created by an older hub up to contract v2 (ALTER TABLE ... ADD COLUMN)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    conn.executescript(SCHEMA_V2_INDEXES)


@dataclass(slots=True)
class DeviceRow:
    """Presence of one device as the hub keeps it."""

    device_id: str
    state: str
    state_reason: str
    state_since: float
    last_seen: float | None = None
    fw: str | None = None
    boot: int | None = None
    enc: str | None = None
    interval_s: int | None = None
    incarnation: int = 0
    """Resets so far: births whose boot went back (firmware_protocol.md 4.1)."""
    boot_ts: int | None = None
    """Power-up time of the current boot (ms since the epoch) from the birth, for uptime stamps."""


UPTIME_BELOW_S = LIMITS.uptime_ts_below / 1000.0
"""A reading time (seconds) below this is still an uptime stamp waiting for its boot's ``boot_ts``."""


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the fleet database in WAL mode (autocommit; transactions are explicit)."""
    return open_db(path).conn


class HubStore:
    """The writer's handle on the fleet database; used by exactly one thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        db = open_db(path)
        Registry(db)  # the principals table must exist for the device check
        self.conn: sqlite3.Connection = db.conn
        self.conn.executescript(SCHEMA)
        add_missing_columns(self.conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back when the block raises."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ registry

    def active_devices(self, device_ids: Iterable[str]) -> set[str]:
        """The ids among ``device_ids`` that are registered, active devices."""
        ids = list(device_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT id FROM principals WHERE id IN ({marks}) AND role = ? AND revoked_at IS NULL",
            [*ids, Role.DEVICE.value],
        )
        return {r[0] for r in rows}

    # ------------------------------------------------------------------ messages and readings

    def insert_message(self, device_id: str, boot: int, seq: int, kind: str, ts: int, received_at: float,
                       skewed: bool) -> bool:
        """Store one message's key; False when (device_id, boot, seq) is already stored (a duplicate)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO messages (device_id, boot, seq, kind, ts, received_at, skewed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id, boot, seq, kind, ts, received_at, int(skewed)),
        )
        return cur.rowcount == 1

    def insert_readings(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows of (device_id, boot, seq, idx, metric, value, ts, received_at, skewed)."""
        self.conn.executemany(
            "INSERT OR IGNORE INTO readings (device_id, boot, seq, idx, metric, value, ts, received_at, skewed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def upsert_latest(self, rows: Iterable[tuple[str, str, float, float, float]]) -> None:
        """Rows of (device_id, metric, ts, value, received_at); an older ts never replaces a newer one."""
        self.conn.executemany(
            "INSERT INTO latest (device_id, metric, ts, value, received_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (device_id, metric) DO UPDATE SET ts = excluded.ts, value = excluded.value,"
            " received_at = excluded.received_at WHERE excluded.ts >= latest.ts",
            rows,
        )

    def insert_alert(self, device_id: str, boot: int, seq: int, ts: float, code: str, severity: str,
                     message: str, received_at: float) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO alerts (device_id, boot, seq, ts, code, severity, message, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (device_id, boot, seq, ts, code, severity, message, received_at),
        )

    def insert_deadletter(self, device_id: str | None, topic: str, reason: str, detail: str, payload: bytes,
                          size: int, received_at: float, boot: int | None = None, seq: int | None = None) -> bool:
        """Store a dead letter; False when one with the same (device_id, boot, seq) is already stored."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO deadletters (device_id, topic, reason, detail, payload, size, received_at, boot, seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device_id, topic, reason, detail, payload, size, received_at, boot, seq),
        )
        return cur.rowcount == 1

    def message_stored(self, device_id: str, boot: int, seq: int) -> bool:
        """True when (device_id, boot, seq) is stored as a message (a dead letter with that key is a duplicate)."""
        return self.conn.execute("SELECT 1 FROM messages WHERE device_id = ? AND boot = ? AND seq = ?",
                                 (device_id, boot, seq)).fetchone() is not None

    def correct_uptime_stamps(self, device_id: str, boot: int, boot_ts_ms: int, skew_threshold_s: float) -> int:
        """Turn the uptime stamps (ts below 10^12 ms) of one stream into wall-clock time; returns readings changed."""
        offset_s = boot_ts_ms / 1000.0
        cur = self.conn.execute(
            "UPDATE readings SET ts = ts + ?, skewed = (abs(ts + ? - received_at) > ?)"
            " WHERE device_id = ? AND boot = ? AND ts < ?",
            (offset_s, offset_s, skew_threshold_s, device_id, boot, UPTIME_BELOW_S))
        changed = cur.rowcount
        self.conn.execute(
            "UPDATE messages SET ts = ts + ?, skewed = (abs(ts + ? - received_at * 1000) > ?)"
            " WHERE device_id = ? AND boot = ? AND ts < ?",
            (boot_ts_ms, boot_ts_ms, skew_threshold_s * 1000, device_id, boot, UPTIME_BELOW_S * 1000))
        self.conn.execute("UPDATE alerts SET ts = ts + ? WHERE device_id = ? AND boot = ? AND ts < ?",
                          (offset_s, device_id, boot, UPTIME_BELOW_S))
        return changed

    def insert_reset(self, device_id: str, incarnation: int, old_boot: int | None, new_boot: int, ts: float) -> None:
        self.conn.execute(
            "INSERT INTO device_resets (device_id, incarnation, old_boot, new_boot, ts) VALUES (?, ?, ?, ?, ?)",
            (device_id, incarnation, old_boot, new_boot, ts),
        )

    def insert_reply(self, device_id: str, command_id: str, state: str, detail: str, result: dict[str, Any],
                     received_at: float) -> None:
        self.conn.execute(
            "INSERT INTO command_replies (device_id, command_id, state, detail, result, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (device_id, command_id, state, detail, json.dumps(result), received_at),
        )

    # ------------------------------------------------------------------ streams and gaps

    def load_stream(self, device_id: str, boot: int) -> SeqTracker | None:
        """The tracker of (device_id, boot) with its open gaps, or None when nothing was stored yet."""
        row = self.conn.execute(
            "SELECT first_seq, max_seq FROM streams WHERE device_id = ? AND boot = ?", (device_id, boot)
        ).fetchone()
        if row is None:
            return None
        gaps = [
            Gap(f, t, d, id=i, dirty=False, dropped_at=dropped)
            for i, f, t, d, dropped in self.conn.execute(
                "SELECT id, from_seq, to_seq, detected_at, dropped_at FROM gaps"
                " WHERE device_id = ? AND boot = ? AND missing > 0 ORDER BY from_seq",
                (device_id, boot),
            )
        ]
        return SeqTracker(row[0], row[1], gaps, dirty=False)

    def save_stream(self, device_id: str, boot: int, tracker: SeqTracker) -> None:
        """Persist the tracker and its changed gaps (a closed gap keeps its row with missing 0)."""
        self.conn.execute(
            "INSERT INTO streams (device_id, boot, first_seq, max_seq) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (device_id, boot) DO UPDATE SET first_seq = excluded.first_seq, max_seq = excluded.max_seq",
            (device_id, boot, tracker.first_seq, tracker.max_seq),
        )
        tracker.dirty = False

    def save_gap(self, device_id: str, boot: int, gap: Gap, now: float) -> None:
        """Insert a new gap or update a shrunk, split or closed one."""
        closed_at = now if gap.missing == 0 else None
        if gap.id is None:
            cur = self.conn.execute(
                "INSERT INTO gaps (device_id, boot, from_seq, to_seq, missing, detected_at, closed_at, dropped_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, boot, gap.from_seq, gap.to_seq, gap.missing, gap.detected_at, closed_at, gap.dropped_at),
            )
            gap.id = cur.lastrowid
        else:
            self.conn.execute(
                "UPDATE gaps SET from_seq = ?, to_seq = ?, missing = ?, closed_at = ?, dropped_at = ? WHERE id = ?",
                (gap.from_seq, gap.to_seq, gap.missing, closed_at, gap.dropped_at, gap.id),
            )
        gap.dirty = False

    # ------------------------------------------------------------------ presence

    def load_devices(self) -> list[DeviceRow]:
        """Every device the hub has seen, for the presence tracker's start."""
        return [DeviceRow(*r) for r in self.conn.execute(
            "SELECT device_id, state, state_reason, state_since, last_seen, fw, boot, enc, interval_s, incarnation,"
            " boot_ts FROM devices"
        )]

    def save_device(self, row: DeviceRow) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO devices (device_id, state, state_reason, state_since, last_seen, fw, boot, enc,"
            " interval_s, incarnation, boot_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.device_id, row.state, row.state_reason, row.state_since, row.last_seen, row.fw, row.boot, row.enc,
             row.interval_s, row.incarnation, row.boot_ts),
        )

    def touch_devices(self, last_seen: dict[str, float]) -> None:
        """Move ``last_seen`` forward for the devices of a batch."""
        self.conn.executemany(
            "UPDATE devices SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE device_id = ?",
            [(ts, dev) for dev, ts in last_seen.items()],
        )

    def insert_presence_event(self, device_id: str, state: str, reason: str, boot: int | None, ts: float) -> None:
        self.conn.execute(
            "INSERT INTO presence_events (device_id, state, reason, boot, ts) VALUES (?, ?, ?, ?, ?)",
            (device_id, state, reason, boot, ts),
        )

    # ------------------------------------------------------------------ retention

    def delete_old_readings(self, cutoff: float, chunk: int) -> int:
        """Delete up to ``chunk`` of the oldest readings received before ``cutoff``, in one short transaction.

        Rows are visited in id order, which is receive order (one writer assigns ids), so each
        call touches at most ``chunk`` rows and needs no index on ``received_at``.
        """
        with self.transaction():
            cur = self.conn.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?) AND received_at < ?",
                (chunk, cutoff),
            )
            deleted = cur.rowcount
            self.conn.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?) AND received_at < ?",
                (chunk, cutoff),
            )
        return deleted


# ---------------------------------------------------------------------- read queries (CLI, dashboard, tests)


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def query_readings(conn: sqlite3.Connection, device_id: str, metric: str | None = None, since: float | None = None,
                   limit: int | None = None) -> list[dict[str, Any]]:
    """Readings of one device in time order, optionally of one metric and since a Unix time."""
    sql = ("SELECT device_id, metric, value, ts, received_at, boot, seq, idx, skewed FROM readings"
           " WHERE device_id = ?")
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
    return _rows(conn, sql, params)


def query_latest(conn: sqlite3.Connection, device_id: str | None = None) -> list[dict[str, Any]]:
    """The latest value of each metric, for one device or all."""
    if device_id is None:
        return _rows(conn, "SELECT * FROM latest ORDER BY device_id, metric")
    return _rows(conn, "SELECT * FROM latest WHERE device_id = ? ORDER BY metric", [device_id])


def query_deadletters(conn: sqlite3.Connection, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest dead letters first; the payload as hex."""
    sql = "SELECT id, device_id, topic, reason, detail, hex(payload) AS payload_hex, size, received_at FROM deadletters"
    params: list[Any] = []
    if reason is not None:
        sql += " WHERE reason = ?"
        params.append(reason)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return _rows(conn, sql, params)


def deadletter_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Dead letters per reason."""
    return {r: n for r, n in conn.execute("SELECT reason, COUNT(*) FROM deadletters GROUP BY reason")}


def query_gaps(conn: sqlite3.Connection, device_id: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
    """Recorded gaps, optionally of one device and only the open ones."""
    sql = "SELECT * FROM gaps WHERE 1=1"
    params: list[Any] = []
    if device_id is not None:
        sql += " AND device_id = ?"
        params.append(device_id)
    if open_only:
        sql += " AND missing > 0"
    return _rows(conn, sql + " ORDER BY device_id, boot, from_seq", params)


def query_presence(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Presence rows by device id (empty when the hub never ran on this db)."""
    if not has_table(conn, "devices"):
        return {}
    return {r["device_id"]: r for r in _rows(conn, "SELECT * FROM devices")}


def query_resets(conn: sqlite3.Connection, device_id: str | None = None) -> list[dict[str, Any]]:
    """Recorded resets (births whose boot went back), oldest first."""
    if not has_table(conn, "device_resets"):
        return []
    if device_id is None:
        return _rows(conn, "SELECT * FROM device_resets ORDER BY id")
    return _rows(conn, "SELECT * FROM device_resets WHERE device_id = ? ORDER BY id", [device_id])


def query_presence_events(conn: sqlite3.Connection, device_id: str) -> list[dict[str, Any]]:
    """Online/offline transitions of one device, oldest first."""
    return _rows(conn, "SELECT * FROM presence_events WHERE device_id = ? ORDER BY id", [device_id])


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name]).fetchone() is not None

