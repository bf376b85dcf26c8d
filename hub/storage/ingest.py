"""What the hub's writer stores: messages, readings, latest values, alerts, dead letters, replies,
sequence streams and gaps; and the retention pass that deletes old readings.

Used by exactly one thread (the writer), on its own connection, inside
:func:`hub.storage.connection.transaction` for each batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.storage.connection import transaction


@dataclass(frozen=True, slots=True)
class GapRow:
    id: int
    from_seq: int
    to_seq: int
    detected_at: float


@dataclass(frozen=True, slots=True)
class StreamRow:
    """The stored state of one (device, boot) sequence: first and highest seq, and its open gaps."""

    first_seq: int
    max_seq: int
    open_gaps: list[GapRow] = field(default_factory=list)


class IngestStore:
    """The writer's tables, on one connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

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
        """Store one alert (a redelivered one is ignored)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO alerts (device_id, boot, seq, ts, code, severity, message, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (device_id, boot, seq, ts, code, severity, message, received_at),
        )

    def insert_deadletter(self, device_id: str | None, topic: str, reason: str, detail: str, payload: bytes,
                          size: int, received_at: float) -> None:
        """Keep refused input with its reason."""
        self.conn.execute(
            "INSERT INTO deadletters (device_id, topic, reason, detail, payload, size, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id, topic, reason, detail, payload, size, received_at),
        )

    def insert_reply(self, device_id: str, command_id: str, state: str, detail: str, result: dict[str, Any],
                     received_at: float) -> None:
        """Keep a device's reply to a command as it came."""
        self.conn.execute(
            "INSERT INTO command_replies (device_id, command_id, state, detail, result, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (device_id, command_id, state, detail, json.dumps(result), received_at),
        )

    # ------------------------------------------------------------------ streams and gaps

    def load_stream_row(self, device_id: str, boot: int) -> StreamRow | None:
        """The stored stream of (device_id, boot) with its open gaps, or None when nothing was stored yet."""
        row = self.conn.execute(
            "SELECT first_seq, max_seq FROM streams WHERE device_id = ? AND boot = ?", (device_id, boot)
        ).fetchone()
        if row is None:
            return None
        gaps = [GapRow(*r) for r in self.conn.execute(
            "SELECT id, from_seq, to_seq, detected_at FROM gaps"
            " WHERE device_id = ? AND boot = ? AND missing > 0 ORDER BY from_seq",
            (device_id, boot),
        )]
        return StreamRow(row[0], row[1], gaps)

    def save_stream_row(self, device_id: str, boot: int, first_seq: int, max_seq: int) -> None:
        """Insert or update the stream of (device_id, boot)."""
        self.conn.execute(
            "INSERT INTO streams (device_id, boot, first_seq, max_seq) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (device_id, boot) DO UPDATE SET first_seq = excluded.first_seq, max_seq = excluded.max_seq",
            (device_id, boot, first_seq, max_seq),
        )

    def save_gap_row(self, device_id: str, boot: int, gap_id: int | None, from_seq: int, to_seq: int, missing: int,
                     detected_at: float, closed_at: float | None) -> int:
        """Insert a new gap (``gap_id`` None) or update a shrunk, split or closed one; returns its id."""
        if gap_id is None:
            cur = self.conn.execute(
                "INSERT INTO gaps (device_id, boot, from_seq, to_seq, missing, detected_at, closed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device_id, boot, from_seq, to_seq, missing, detected_at, closed_at),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid
        self.conn.execute(
            "UPDATE gaps SET from_seq = ?, to_seq = ?, missing = ?, closed_at = ? WHERE id = ?",
            (from_seq, to_seq, missing, closed_at, gap_id),
        )
        return gap_id

    # ------------------------------------------------------------------ retention

    def delete_old_readings(self, cutoff: float, chunk: int) -> int:
        """Delete up to ``chunk`` of the oldest readings received before ``cutoff``, in one short transaction.

        Rows are visited in id order, which is receive order (one writer assigns ids), so each
        call touches at most ``chunk`` rows and needs no index on ``received_at``.
        """
        with transaction(self.conn):
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
