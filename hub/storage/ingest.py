"""What the hub's writer stores: messages, readings, latest values, alerts, dead letters, replies,
sequence streams and gaps; and the retention pass that deletes old readings.

Used by exactly one thread (the writer), on its own connection, inside
:func:`hub.storage.connection.transaction` for each batch.
"""

from __future__ import annotations

import json
from itertools import chain
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hub.storage.connection import Connection, transaction
from hub.storage.dialect import is_pg
from hub.storage.rollups import Fold, fold
from hub.storage.runs import CLEAN, Run, build_runs
from hub.storage.schema import ROLLUP_COLUMNS, ROLLUP_UPSERT, ROLLUP_UPSERT_PG, RUN_COLUMNS, RUN_UPSERT, rollup_rows
from hub.storage.values import pack, unpack
from protocol.limits import LIMITS

def _as_is(value: float) -> float:
    return value


_UNKNOWN = object()
"""A stream whose newest run has not been looked up yet."""

StoredTelemetry = tuple[str, int, int, int, Sequence[tuple[int, str, float]], float, bool]
"""One stored telemetry message: ``(device_id, boot, seq, base_ms, readings as (dt ms, metric, value), received_at,
skewed)``; ``boot`` is the stream key (:mod:`hub.incarnations`)."""

_SAMPLE_COLUMNS = "INSERT OR IGNORE INTO samples (series, ts, boot, seq, idx, value) VALUES "
_INSERT_SAMPLE = _SAMPLE_COLUMNS + "(?, ?, ?, ?, ?, ?)"
SAMPLES_PER_INSERT = 100
"""Samples one INSERT statement carries on SQLite (600 parameters, under every SQLite's limit of 999)."""
_INSERT_SAMPLES = _SAMPLE_COLUMNS + ", ".join(["(?, ?, ?, ?, ?, ?)"] * SAMPLES_PER_INSERT)


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
        self._drawn = -2  # the last number this store drew from ingest_writes (PostgreSQL)
        self._pack = _as_is if self._pg else pack  # PostgreSQL keeps a reading's value as a plain double
        self._devices: dict[str, int] = {}
        self._series: dict[tuple[str, str], int] = {}
        self._counted = {"readings": 0, "messages": 0}
        self._tails: dict[tuple[int, int], Run | None | object] = {}
        """The newest run of each (device, boot) seen, None when it has none; valid while no other
        connection writes (checked with ``PRAGMA data_version`` at each transaction's start)."""
        self._pending: dict[tuple[int, int, int], Run] = {}
        self._staged: list[tuple[int, int, int, int, int, int | float]] = []
        self._folding: list[tuple[int, int, float]] = []
        self._latest: dict[int, tuple[int, float, str, str, float]] = {}
        self._data_version = -1
        self._retention_series = 0  # the retention pass goes round the series; where it stopped
        self._round_deleted = 0  # readings deleted so far in this round

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction; the running totals are added in it; rolled back when the block raises."""
        try:
            with transaction(self.conn):
                version = self._write_generation()
                if version != self._data_version:  # another connection committed: our runs may be stale
                    self._tails.clear()
                    self._data_version = version
                yield self.conn
                self._flush_readings()
                self._flush_runs()
                for name, n in self._counted.items():
                    if n:
                        self.conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, name))
        except BaseException:
            self._devices.clear()
            self._series.clear()
            self._tails.clear()
            self._pending.clear()
            self._staged.clear()
            self._folding.clear()
            self._latest.clear()
            raise
        finally:
            self._counted = dict.fromkeys(self._counted, 0)

    def _write_generation(self) -> int:
        """A number that changes when another connection committed since this one's last transaction: SQLite's
        ``data_version``; on PostgreSQL every ingest transaction draws from the sequence ``ingest_writes`` (under
        the write lock), so a draw that is not our previous one plus one means another worker wrote between."""
        if not self._pg:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        drawn = int(self.conn.execute("SELECT nextval('ingest_writes')").fetchone()[0])
        previous, self._drawn = self._drawn, drawn
        return self._data_version if drawn == previous + 1 else -drawn

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
        The key joins the run of seqs it continues (:mod:`hub.storage.runs`): in the common case
        (the next seq of the stream's newest run) no SQL at all until the batch commits.
        """
        device = self._devices.get(device_id)
        if device is None:
            device = self.device_key(device_id)
        received = round(received_at * 1000)
        lag = received - ts
        code = 0 if kind == "t" else 1
        flag = 1 if skewed else 0
        stream = (device, boot)
        tail = self._tails.get(stream, _UNKNOWN)
        if tail is _UNKNOWN:
            tail = self._load_run(device, boot, None)
            self._tails[stream] = tail
        if tail is None or seq > tail.last:
            queued = tail is not None and tail.state != CLEAN  # a run this transaction changed is in _pending
            if tail is None or seq != tail.last + 1 or not tail.extend(code, flag, received, lag):
                tail = Run(device, boot, seq, seq, code, flag, received, lag)
                self._tails[stream] = tail
                queued = False
            if not queued:
                self._pending[(device, boot, tail.first)] = tail
        elif seq >= tail.first:
            return False
        elif not self._insert_late(device, boot, seq, code, flag, received, lag):
            return False
        self._counted["messages"] += 1
        return True

    def insert_messages(self, rows: Sequence[tuple[str, int, int, str, int, float, bool]]) -> list[bool]:
        """Batch twin of :meth:`insert_message` for rows of (device_id, boot, seq, kind, ts, received_at, skewed).

        Returns, per row, True when it was stored and False for a duplicate (stored before, or
        earlier in ``rows``). Call it inside :meth:`transaction`.
        """
        insert = self.insert_message
        return [insert(*row) for row in rows]

    def _load_run(self, device: int, boot: int, seq: int | None, after: bool = False) -> Run | None:
        """The stored run of (device, boot) that starts at or before ``seq`` (after it, with ``after``;
        the newest one for None)."""
        self._flush_runs()  # the database must hold what this transaction changed so far
        sql = ("SELECT device, boot, first_seq, last_seq, kind, skewed, received_at, lag_ms, offsets FROM message_runs"
               " WHERE device = ? AND boot = ?")
        if seq is None:
            row = self.conn.execute(sql + " ORDER BY first_seq DESC LIMIT 1", (device, boot)).fetchone()
        elif after:
            row = self.conn.execute(sql + " AND first_seq > ? ORDER BY first_seq LIMIT 1", (device, boot, seq)).fetchone()
        else:
            row = self.conn.execute(sql + " AND first_seq <= ? ORDER BY first_seq DESC LIMIT 1",
                                    (device, boot, seq)).fetchone()
        return None if row is None else Run.from_row(row)

    def _insert_late(self, device: int, boot: int, seq: int, kind: int, skewed: int, received: int, lag: int) -> bool:
        """A seq below the stream's newest run: False when a run holds it, else stored in the hole it fills."""
        before = self._load_run(device, boot, seq)
        if before is not None and before.last >= seq:
            return False
        nxt = self._load_run(device, boot, seq, after=True)  # exists: the newest run starts above seq
        if before is not None and before.last + 1 == seq and before.extend(kind, skewed, received, lag):
            run = before
        else:
            run = Run(device, boot, seq, seq, kind, skewed, received, lag)
        if nxt is not None and run.absorb(nxt):  # the hole is closed: one run instead of two
            self.conn.execute("DELETE FROM message_runs WHERE device = ? AND boot = ? AND first_seq = ?",
                              (device, boot, nxt.first))
            tail = self._tails.get((device, boot))
            if isinstance(tail, Run) and tail.first == nxt.first:
                self._tails[(device, boot)] = run
        self.conn.execute(RUN_UPSERT, run.row())
        run.state = CLEAN
        return True

    def _flush_runs(self) -> None:
        """Write the runs this transaction created or grew (one executemany; COPY on PostgreSQL)."""
        if self._pending:
            self._upsert(RUN_UPSERT, "message_runs", RUN_COLUMNS, [run.row() for run in self._pending.values()])
            for run in self._pending.values():
                run.state = CLEAN
            self._pending.clear()

    def _rewrite_runs(self, device: int, boot: int, change: Callable[[list[list[int]]], bool]) -> None:
        """Rebuild the runs of (device, boot) after ``change`` edits its messages [seq, kind, skewed, received, lag]
        in place (returns False when nothing changed)."""
        self._flush_runs()
        rows = self.conn.execute(
            "SELECT device, boot, first_seq, last_seq, kind, skewed, received_at, lag_ms, offsets FROM message_runs"
            " WHERE device = ? AND boot = ? ORDER BY first_seq", (device, boot)).fetchall()
        messages = [list(m) for row in rows for m in Run.from_row(row).messages()]
        if not change(messages):
            return
        self.conn.execute("DELETE FROM message_runs WHERE device = ? AND boot = ?", (device, boot))
        self.conn.executemany(RUN_UPSERT, [run.row() for run in build_runs(device, boot, map(tuple, messages))])
        self._tails.pop((device, boot), None)

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
            out.append((key, ts_ms, boot, seq, idx, self._pack(value)))
            folding.append((key, ts_ms, value))
        self._insert_samples(out)
        self._counted["readings"] += len(out)
        # one upsert per (series, period, start) per batch; the values as the devices sent them
        self._upsert_rollups(fold(folding))

    def _insert_samples(self, rows: list[tuple[int, int, int, int, int, int | float]]) -> None:
        if self._pg:  # COPY and one INSERT ... SELECT: a few round trips per batch instead of one per row
            self.conn.copy_insert(  # type: ignore[union-attr]
                "samples", ("series", "ts", "boot", "seq", "idx", "value"), rows, "ON CONFLICT DO NOTHING")
        else:
            # 100 rows per statement: executemany steps, resets and hands the GIL back and forth once per row
            # (callgrind, 20,000 rows in batches of 500: 10.5 k instructions a row -> 7.5 k)
            whole = len(rows) - len(rows) % SAMPLES_PER_INSERT
            for start in range(0, whole, SAMPLES_PER_INSERT):
                self.conn.execute(_INSERT_SAMPLES, list(chain.from_iterable(rows[start:start + SAMPLES_PER_INSERT])))
            if whole < len(rows):
                self.conn.executemany(_INSERT_SAMPLE, rows[whole:])

    def _upsert_rollups(self, acc: Fold) -> None:
        self._upsert(ROLLUP_UPSERT_PG if self._pg else ROLLUP_UPSERT, "rollups", ROLLUP_COLUMNS,
                     sorted(rollup_rows(acc, self._pack)))

    def _upsert(self, upsert: str, table: str, columns: tuple[str, ...], rows: list[Any]) -> None:
        """``upsert`` (INSERT ... VALUES (?, ...) ON CONFLICT ...) for each row; on PostgreSQL one COPY and one
        INSERT ... SELECT with the same conflict clause (the rows' keys are distinct)."""
        if not rows:
            return
        if self._pg:
            tail = upsert[upsert.index(" ON CONFLICT"):]
            self.conn.copy_insert(table, columns, rows, tail)  # type: ignore[union-attr]
        else:
            self.conn.executemany(upsert, rows)

    def stage_readings(self, telemetry: Iterable[StoredTelemetry]) -> None:
        """Stored messages' readings, ``(dt ms, metric, value)`` after each message's time ``base_ms``, stored when
        the transaction commits: one executemany of samples, one upsert per touched minute, hour and latest value.

        The writer's per-reading work happens here, once, on plain tuples; it hands over a device's messages of a
        batch in one call.
        """
        series = self._series
        staged = self._staged
        packed = self._pack
        folding = self._folding
        latest = self._latest
        for device_id, boot, seq, base_ms, readings, received_at, _skewed in telemetry:
            for idx, (dt, metric, value) in enumerate(readings):
                key = series.get((device_id, metric))
                if key is None:
                    key = self.series_key(device_id, metric)
                ts = base_ms + dt
                staged.append((key, ts, boot, seq, idx, packed(value)))
                folding.append((key, ts, value))
                prev = latest.get(key)
                if prev is None or ts >= prev[0]:
                    latest[key] = (ts, value, device_id, metric, received_at)

    def _flush_readings(self) -> None:
        if not self._staged:
            return
        self._insert_samples(self._staged)
        self._counted["readings"] += len(self._staged)
        self._upsert_rollups(fold(self._folding))
        self.upsert_latest([(device_id, metric, ts / 1000.0, value, received_at)
                            for ts, value, device_id, metric, received_at in self._latest.values()])
        self._staged = []
        self._folding = []
        self._latest = {}

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

        def correct(messages: list[list[int]]) -> bool:
            changed = False
            for m in messages:  # [seq, kind, skewed, received, lag]: the device's ts is received - lag
                if m[3] - m[4] < below:
                    m[4] -= boot_ts_ms
                    m[2] = int(abs(m[4]) > skew_threshold_s * 1000)
                    changed = True
            return changed

        self._rewrite_runs(device, boot, correct)
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
            cur = self.conn.execute(
                "INSERT INTO gaps (device_id, boot, from_seq, to_seq, missing, detected_at, closed_at, dropped_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, boot, from_seq, to_seq, missing, detected_at, closed_at, dropped_at),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid
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
                    self._flush_runs()
                    # a run's messages came within 65.5 s of its first: it goes once all of them are old
                    for (device,) in self.conn.execute("SELECT id FROM device_keys").fetchall():
                        self.conn.execute("DELETE FROM message_runs WHERE device = ? AND received_at < ?",
                                          (device, cutoff_ms - 65_536))
                    self._tails.clear()
                self._round_deleted = -deleted
            self._round_deleted += deleted
        return deleted
