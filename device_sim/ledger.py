"""The simulator's ledger: every message it produced, and what became of it.

A SQLite file with two tables, written in batches (``flush`` every half second from the
fleet, and on close), so that recording costs the event loop little:

``messages``  one row per (device, boot, seq) the device produced: kind (telemetry,
              oversized, lost), number of readings and their ``[metric, value]`` pairs
              as JSON, message timestamp, the fault that
              touched it, how often it was published, and whether a PUBACK and a hub
              watermark covered it (0/1, with the time).
``faults``    one row per fault event: device, boot, seq (the last seq used when the
              fault takes none), kind, detail, time.

The reliability tests compare ``messages`` with the hub's database: every row with
``watermarked = 1`` must be in the hub; rows with ``kind = 'lost'`` must show up as gaps.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    n_readings INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    fault TEXT,
    sent INTEGER NOT NULL DEFAULT 0,
    pubacked INTEGER NOT NULL DEFAULT 0,
    puback_at REAL,
    watermarked INTEGER NOT NULL DEFAULT 0,
    watermark_at REAL,
    produced_at REAL NOT NULL,
    readings TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (device, boot, seq)
);
CREATE TABLE IF NOT EXISTS faults (
    at REAL NOT NULL,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


class Ledger:
    """Records message events in memory and writes them to SQLite on :meth:`flush`.

    With ``path=None`` it only counts (no file), so callers never branch on it.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        self._produced: list[tuple[object, ...]] = []
        self._sent: list[tuple[str, int, int]] = []
        self._pubacked: list[tuple[float, str, int, int]] = []
        self._watermarks: list[tuple[float, str, int, int]] = []
        self._faults: list[tuple[object, ...]] = []

    def produced(self, device: str, boot: int, seq: int, kind: str, readings: list[tuple[str, float]], ts: int,
                 fault: str | None = None) -> None:
        """A message took seq ``seq`` (sent or not) carrying ``readings`` as (metric, value)."""
        if self._db is not None:
            self._produced.append((device, boot, seq, kind, len(readings), ts, fault, time.time(),
                                   json.dumps(readings, separators=(",", ":"))))

    def sent(self, device: str, boot: int, seq: int) -> None:
        """The message was published (once more)."""
        if self._db is not None:
            self._sent.append((device, boot, seq))

    def pubacked(self, device: str, boot: int, seq: int) -> None:
        """The broker acknowledged the message."""
        if self._db is not None:
            self._pubacked.append((time.time(), device, boot, seq))

    def watermarked(self, device: str, boot: int, seq: int) -> None:
        """The hub's watermark covers every message of ``boot`` up to ``seq``."""
        if self._db is not None:
            self._watermarks.append((time.time(), device, boot, seq))

    def fault(self, device: str, boot: int, seq: int, kind: str, detail: str = "") -> None:
        """A fault happened at this device and seq."""
        if self._db is not None:
            self._faults.append((time.time(), device, boot, seq, kind, detail))

    def flush(self) -> None:
        """Write everything recorded since the last flush in one transaction."""
        db = self._db
        if db is None or not (self._produced or self._sent or self._pubacked or self._watermarks or self._faults):
            return
        produced, self._produced = self._produced, []
        sent, self._sent = self._sent, []
        pubacked, self._pubacked = self._pubacked, []
        watermarks, self._watermarks = self._watermarks, []
        faults, self._faults = self._faults, []
        with db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR IGNORE INTO messages (device, boot, seq, kind, n_readings, ts, fault, produced_at, readings)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", produced)
            db.executemany("UPDATE messages SET sent = sent + 1 WHERE device = ? AND boot = ? AND seq = ?", sent)
            db.executemany(
                "UPDATE messages SET pubacked = 1, puback_at = COALESCE(puback_at, ?)"
                " WHERE device = ? AND boot = ? AND seq = ?", pubacked)
            db.executemany(
                "UPDATE messages SET watermarked = 1, watermark_at = ?"
                " WHERE device = ? AND boot = ? AND seq <= ? AND watermarked = 0", watermarks)
            db.executemany("INSERT INTO faults (at, device, boot, seq, kind, detail) VALUES (?, ?, ?, ?, ?, ?)", faults)

    def close(self) -> None:
        """Flush and close the file."""
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None
