"""The hub's heartbeat: one row per hub worker, rewritten about once a second.

The dashboard and ``fleet status`` read it to tell whether the hub is alive and how it
keeps up (counters, queue depth, ingest lag) without talking to the hub process.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_status (
    worker TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    broker TEXT NOT NULL,
    connected INTEGER NOT NULL,
    stats TEXT NOT NULL
)
"""

ALIVE_WITHIN_S = 5.0
"""A hub whose heartbeat is older than this is considered down."""


def write_heartbeat(conn: sqlite3.Connection, worker: str, pid: int, started_at: float, broker: str,
                    connected: bool, stats: dict[str, Any], now: float | None = None) -> None:
    """Replace this worker's heartbeat row (autocommit; a single small statement)."""
    conn.execute(SCHEMA)
    conn.execute(
        "INSERT OR REPLACE INTO hub_status (worker, pid, started_at, updated_at, broker, connected, stats)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (worker, pid, started_at, time.time() if now is None else now, broker, int(connected), json.dumps(stats)),
    )


def read_heartbeats(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every worker's last heartbeat (empty when no hub ever ran on this database)."""
    try:
        rows = conn.execute(
            "SELECT worker, pid, started_at, updated_at, broker, connected, stats FROM hub_status ORDER BY worker"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    return [
        {"worker": w, "pid": pid, "started_at": s, "updated_at": u, "broker": b, "connected": bool(c),
         "stats": json.loads(st)}
        for w, pid, s, u, b, c, st in rows
    ]


def alive(heartbeat: dict[str, Any], now: float | None = None) -> bool:
    """True when the heartbeat is recent enough and not the last one of a clean stop."""
    if heartbeat["stats"].get("stopped"):
        return False
    return (time.time() if now is None else now) - heartbeat["updated_at"] <= ALIVE_WITHIN_S
