"""What the hub's writer stores: messages, readings, latest values, alerts, dead letters, replies,
sequence streams and gaps; and the retention pass that deletes old readings.

Used by exactly one thread (the writer), on its own connection, inside
:func:`hub.storage.connection.transaction` for each batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hub.storage.connection import Connection, transaction
from hub.storage.dialect import is_pg
from hub.storage.rollups import Fold, fold
from hub.storage.schema import ROLLUP_COLUMNS, ROLLUP_UPSERT, rollup_rows
from hub.storage.values import pack, unpack
from protocol.limits import LIMITS


@dataclass(frozen=True, slots=True)
class GapRow:
    id: int
    from_seq: int
    to_seq: int
    detected_at: float
    dropped_at: float | None = None
    """When the device declared these seqs given up (firmware_protocol.md 5.4); None: still awaited."""


@dataclass(frozen=True, slots=True)
class StreamRow:
    """The stored state of one (device, boot) sequence: first and highest seq, and its open gaps."""

    first_seq: int
    max_seq: int
    open_gaps: list[GapRow] = field(default_factory=list)


class IngestStore:
    """The writer's tables, on one connection.

    Device and series keys are cached per store; the cache is dropped whenever a transaction
    rolls back (a key inserted in it is gone), so a cached key always exists in the file.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._pg = is_pg(conn)
        self._devices: dict[str, int] = {}
        self._series: dict[tuple[str, str], int] = {}
        self._counted = {"readings": 0, "messages": 0}
        # PostgreSQL: the batch's message keys are looked up at once (expect_messages) and written at once,
        # at the end of the transaction (the write lock makes the look-up and the insert one step)
        self._stored_keys: set[tuple[int, int, int]] = set()
        self._absent_keys: set[tuple[int, int, int]] = set()
        self._pending_keys: list[tuple[int, int, int, int, int, int, int]] = []
        self._retention_series = 0  # the retention pass goes round the series; where it stopped
        self._round_deleted = 0  # readings deleted so far in this round

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction; the running totals are added in it; rolled back when the block raises."""
        try:
            with transaction(self.conn):
                yield self.conn
                self._flush_keys()
                for name, n in self._counted.items():
                    if n:
                        self.conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, name))
        except BaseException:
            self._devices.clear()
            self._series.clear()
            raise
        finally:
            self._counted = dict.fromkeys(self._counted, 0)
            self._stored_keys.clear()
            self._absent_keys.clear()
            self._pending_keys.clear()

    def expect_messages(self, keys: Iterable[tuple[str, int, int]]) -> None:
        """The (device_id, boot, seq) keys this transaction is about to offer to :meth:`insert_message`: on
        PostgreSQL they are looked up in one query, and the new ones written in one COPY at commit, instead of
        a round trip each. A key offered but not expected is still looked up (one round trip). No-op on SQLite."""
        if not self._pg:
            return
        wanted = {(self.device_key(d), b, s) for d, b, s in keys}
        if not wanted:
            return
        cols = [list(c) for c in zip(*wanted)]  # three arrays (lists: psycopg sends a tuple as a record)
        found = {tuple(r) for r in self.conn.execute_native(  # type: ignore[union-attr]
            "SELECT device, boot, seq FROM message_keys WHERE (device, boot, seq) IN"
            " (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]))", cols).fetchall()}
        self._stored_keys |= found
        self._absent_keys |= wanted - found

    def _flush_keys(self) -> None:
        """Write the message keys :meth:`insert_message` accepted in this transaction (PostgreSQL)."""
        if self._pending_keys:
            rows, self._pending_keys = self._pending_keys, []
            self.conn.copy_insert(  # type: ignore[union-attr]
                "message_keys", ("device", "boot", "seq", "kind", "received_at", "lag_ms", "skewed"), rows,
                "ON CONFLICT DO NOTHING")

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it (tools and benchmarks; the hub lets SQLite do it).
        Nothing to do on PostgreSQL (its server checkpoints)."""
        if self._pg:
            return
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------ keys

    def device_key(self, device_id: str) -> int:
        """The integer key of ``device_id`` (created on first use)."""
        key = self._devices.get(device_id)
        if key is None:
            self.conn.execute("INSERT OR IGNORE INTO device_keys (device_id) VALUES (?)", (device_id,))
            key = self.conn.execute("SELECT id FROM device_keys WHERE device_id = ?", (device_id,)).fetchone()[0]
            self._devices[device_id] = key
        return key

    def series_key(self, device_id: str, metric: str) -> int:
        """The integer key of (device, metric) (created on first use)."""
        key = self._series.get((device_id, metric))
        if key is None:
            device = self.device_key(device_id)
            self.conn.execute("INSERT OR IGNORE INTO metric_keys (metric) VALUES (?)", (metric,))
            self.conn.execute(
                "INSERT OR IGNORE INTO series (device, metric) SELECT ?, id FROM metric_keys WHERE metric = ?",
                (device, metric))
            key = self.conn.execute(
                "SELECT s.id FROM series s JOIN metric_keys m ON m.id = s.metric WHERE s.device = ? AND m.metric = ?",
                (device, metric)).fetchone()[0]
            self._series[(device_id, metric)] = key
        return key

    # ------------------------------------------------------------------ messages and readings

    def insert_message(self, device_id: str, boot: int, seq: int, kind: str, ts: int, received_at: float,
                       skewed: bool) -> bool:
        """Store one message's key; False when (device_id, boot, seq) is already stored (a duplicate).

        ``kind`` is "t" or "a"; ``ts`` the device's time in ms; ``received_at`` the hub's, in seconds.
        """
        received_ms = round(received_at * 1000)
        if self._pg:
            return self._offer_key_pg((self.device_key(device_id), boot, seq, 0 if kind == "t" else 1, received_ms,
                                       received_ms - ts, int(skewed)))
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO message_keys (device, boot, seq, kind, received_at, lag_ms, skewed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.device_key(device_id), boot, seq, 0 if kind == "t" else 1, received_ms, received_ms - ts,
             int(skewed)),
        )
        if cur.rowcount == 1:
            self._counted["messages"] += 1
            return True
        return False

    def _offer_key_pg(self, row: tuple[int, int, int, int, int, int, int]) -> bool:
        key = row[:3]
        if key in self._stored_keys:
            return False
        if key not in self._absent_keys and self.conn.execute(
                "SELECT 1 FROM message_keys WHERE device = ? AND boot = ? AND seq = ?", key).fetchone():
            self._stored_keys.add(key)
            return False
        self._absent_keys.discard(key)
        self._stored_keys.add(key)  # a second copy later in this transaction is a duplicate
        self._pending_keys.append(row)
        self._counted["messages"] += 1
        if not self.conn.in_transaction:  # type: ignore[union-attr]  # autocommit use: written at once
            self._flush_keys()
        return True

    def insert_messages(self, rows: Sequence[tuple[str, int, int, str, int, float, bool]]) -> list[bool]:
        """Batch twin of :meth:`insert_message` for rows of (device_id, boot, seq, kind, ts, received_at, skewed).

        Returns, per row, True when it was stored and False for a duplicate (stored before, or
        earlier in ``rows``). Two statements per batch instead of one per message; call it inside
        :meth:`transaction` (the write lock makes the look-up and the insert one step).
        """
        keyed = []
        for device_id, boot, seq, kind, ts, received_at, skewed in rows:
            received_ms = round(received_at * 1000)
            keyed.append((self.device_key(device_id), boot, seq, 0 if kind == "t" else 1, received_ms,
                          received_ms - ts, int(skewed)))
        if self._pg:
            return self._insert_messages_pg(keyed)
        existing: set[tuple[int, int, int]] = set()
        for i in range(0, len(keyed), 300):  # 3 bound variables a row, under SQLite's limit
            chunk = keyed[i:i + 300]
            # a join, not "(device, boot, seq) IN (VALUES ...)": SQLite answers that one with a full scan
            existing.update(self.conn.execute(
                "WITH batch (device, boot, seq) AS (VALUES " + ",".join(["(?, ?, ?)"] * len(chunk)) + ")"
                " SELECT k.device, k.boot, k.seq FROM batch JOIN message_keys k"
                " ON k.device = batch.device AND k.boot = batch.boot AND k.seq = batch.seq",
                [v for r in chunk for v in r[:3]]).fetchall())
        stored, new = [], []
        for row in keyed:
            key = row[:3]
            fresh = key not in existing
            existing.add(key)
            stored.append(fresh)
            if fresh:
                new.append(row)
        self.conn.executemany(
            "INSERT INTO message_keys (device, boot, seq, kind, received_at, lag_ms, skewed) VALUES (?, ?, ?, ?, ?, ?, ?)",
            new)
        self._counted["messages"] += len(new)
        return stored

    def _insert_messages_pg(self, keyed: list[tuple[int, int, int, int, int, int, int]]) -> list[bool]:
        """PostgreSQL: one multi-row insert that skips stored keys and returns the keys it stored (a key twice
        in the batch is stored once: the first copy wins)."""
        self._flush_keys()
        inserted = set(self.conn.copy_insert(  # type: ignore[union-attr]
            "message_keys", ("device", "boot", "seq", "kind", "received_at", "lag_ms", "skewed"), keyed,
            "ON CONFLICT DO NOTHING RETURNING device, boot, seq", returning=True))
        stored = []
        for row in keyed:
            key = row[:3]
            fresh = key in inserted
            inserted.discard(key)
            stored.append(fresh)
        self._counted["messages"] += sum(stored)
        return stored

    def insert_readings(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows of (device_id, boot, seq, idx, metric, value, ts, received_at, skewed); ts in seconds.

        ``received_at`` and ``skewed`` are the message's and are kept once, with its key.
        """
        series = self._series
        out, folding = [], []
        for device_id, boot, seq, idx, metric, value, ts, _received_at, _skewed in rows:
            key = series.get((device_id, metric))
            if key is None:
                key = self.series_key(device_id, metric)
            ts_ms = round(ts * 1000)
            out.append((key, ts_ms, boot, seq, idx, value if self._pg else pack(value)))
            folding.append((key, ts_ms, value))
        if self._pg:  # COPY and one INSERT ... SELECT: a few round trips per batch instead of one per row
            self.conn.copy_insert(  # type: ignore[union-attr]
                "samples", ("series", "ts", "boot", "seq", "idx", "value"), out, "ON CONFLICT DO NOTHING")
        else:
            self.conn.executemany(
                "INSERT OR IGNORE INTO samples (series, ts, boot, seq, idx, value) VALUES (?, ?, ?, ?, ?, ?)", out)
        self._counted["readings"] += len(out)
        # one upsert per (series, period, start) per batch; the values as the devices sent them
        self._upsert_rollups(fold(folding))

    def _upsert_rollups(self, acc: Fold) -> None:
        rows = rollup_rows(acc)
        if self._pg:
            _, _, tail = ROLLUP_UPSERT.partition(" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            self.conn.copy_insert("rollups", ROLLUP_COLUMNS, sorted(rows), tail)  # type: ignore[union-attr]
        else:
            self.conn.executemany(ROLLUP_UPSERT, rows)

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
                          size: int, received_at: float, boot: int | None = None, seq: int | None = None) -> bool:
        """Keep refused input with its reason, under its (boot, seq) when it names them; False when a dead
        letter with that (device_id, boot, seq) is already stored."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO deadletters (device_id, topic, reason, detail, payload, size, received_at, boot, seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device_id, topic, reason, detail, payload, size, received_at, boot, seq),
        )
        return cur.rowcount == 1

    def correct_uptime_stamps(self, device_id: str, boot: int, boot_ts_ms: int, skew_threshold_s: float) -> int:
        """Turn the uptime stamps (ts below 10^12 ms) of one stream into wall-clock time; returns readings changed.

        The samples move to their wall-clock place in the clustered key, the message keys get their
        lag (and skew flag) recomputed, and the rollups of the device's series below 10^12 are
        folded again, since the uptime-stamped readings were aggregated under uptime minutes.
        """
        self._flush_keys()  # the keys accepted so far in this transaction get their lag corrected too
        below = LIMITS.uptime_ts_below
        device = self.device_key(device_id)
        series = [r[0] for r in self.conn.execute("SELECT id FROM series WHERE device = ?", (device,))]
        marks = ",".join("?" * len(series))
        moved: list[tuple[int, int, Any]] = []
        if series:
            moved = self.conn.execute(
                f"SELECT series, ts + ?, value FROM samples WHERE series IN ({marks}) AND boot = ? AND ts < ?",
                (boot_ts_ms, *series, boot, below)).fetchall()
            self.conn.execute(
                f"UPDATE samples SET ts = ts + ? WHERE series IN ({marks}) AND boot = ? AND ts < ?",
                (boot_ts_ms, *series, boot, below))
        self.conn.execute(
            "UPDATE message_keys SET lag_ms = lag_ms - ?, skewed = CASE WHEN abs(lag_ms - ?) > ? THEN 1 ELSE 0 END"
            " WHERE device = ? AND boot = ? AND received_at - lag_ms < ?",
            (boot_ts_ms, boot_ts_ms, skew_threshold_s * 1000, device, boot, below))
        self.conn.execute("UPDATE alerts SET ts = ts + ? WHERE device_id = ? AND boot = ? AND ts < ?",
                          (boot_ts_ms / 1000.0, device_id, boot, below / 1000.0))
        if moved:
            # the moved readings were aggregated under uptime minutes: drop those aggregates, fold
            # again what still sits below 10^12 (other boots not corrected yet), and add the moved
            # readings to their wall-clock minutes
            self.conn.execute(f"DELETE FROM rollups WHERE series IN ({marks}) AND start < ?", (*series, below))
            still = self.conn.execute(
                f"SELECT series, ts, value FROM samples WHERE series IN ({marks}) AND ts < ?",
                (*series, below)).fetchall()
            self._upsert_rollups(fold((sid, ts, unpack(v)) for sid, ts, v in [*still, *moved]))
        return len(moved)

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
            "SELECT id, from_seq, to_seq, detected_at, dropped_at FROM gaps"
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
                     detected_at: float, closed_at: float | None, dropped_at: float | None = None) -> int:
        """Insert a new gap (``gap_id`` None) or update a shrunk, split, closed or dropped one; returns its id."""
        if gap_id is None:
            row = self.conn.execute(
                "INSERT INTO gaps (device_id, boot, from_seq, to_seq, missing, detected_at, closed_at, dropped_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (device_id, boot, from_seq, to_seq, missing, detected_at, closed_at, dropped_at),
            ).fetchone()
            return int(row[0])
        self.conn.execute(
            "UPDATE gaps SET from_seq = ?, to_seq = ?, missing = ?, closed_at = ?, dropped_at = ? WHERE id = ?",
            (from_seq, to_seq, missing, closed_at, dropped_at, gap_id),
        )
        return gap_id

    # ------------------------------------------------------------------ retention

    def delete_old_readings(self, cutoff: float, chunk: int) -> int:
        """Delete up to ``chunk`` readings older than ``cutoff`` (device time, Unix seconds) in one short transaction.

        The pass goes round the series, range-deleting the oldest rows of each (the table is
        clustered on series and time, so no scan); once round, it drops the message keys
        received before ``cutoff``, device by device. Returns the readings deleted.
        """
        cutoff_ms = round(cutoff * 1000)
        deleted = 0
        with self.transaction():
            ids = [r[0] for r in self.conn.execute("SELECT id FROM series WHERE id > ? ORDER BY id",
                                                   (self._retention_series,))]
            for sid in ids:
                cur = self.conn.execute(
                    "DELETE FROM samples WHERE (series, ts, boot, seq, idx) IN (SELECT series, ts, boot, seq, idx"
                    " FROM samples WHERE series = ? AND ts < ? ORDER BY ts LIMIT ?)", (sid, cutoff_ms, chunk - deleted))
                deleted += cur.rowcount
                if deleted >= chunk:
                    break
                self._retention_series = sid
            else:
                self._retention_series = 0  # round done: old message keys next (if the round found old rows)
                if self._round_deleted + deleted:
                    for (device,) in self.conn.execute("SELECT id FROM device_keys").fetchall():
                        self.conn.execute("DELETE FROM message_keys WHERE device = ? AND received_at < ?",
                                          (device, cutoff_ms))
                self._round_deleted = -deleted
            self._round_deleted += deleted
        return deleted
