"""Hub workers' heartbeats (``hub_status``) and the adoption claims of a worker group (``hub_adoptions``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hub.storage.connection import Connection


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One worker's last heartbeat."""

    worker: str
    pid: int
    started_at: float
    updated_at: float
    broker: str
    connected: bool
    stats: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "pid": self.pid, "started_at": self.started_at, "updated_at": self.updated_at,
                "broker": self.broker, "connected": self.connected, "stats": self.stats}


class StatusStore:
    """Heartbeats and adoption claims on one connection (autocommit: each call is one small statement)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def write_heartbeat(self, worker: str, pid: int, started_at: float, broker: str, connected: bool,
                        stats: dict[str, Any], now: float) -> None:
        """Replace this worker's heartbeat row."""
        self.conn.execute(
            "INSERT OR REPLACE INTO hub_status (worker, pid, started_at, updated_at, broker, connected, stats)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (worker, pid, started_at, now, broker, int(connected), json.dumps(stats)),
        )

    def delete_heartbeat(self, worker: str) -> None:
        """A clean stop removes the row, so readers say "hub down" at once, not after a timeout."""
        self.conn.execute("DELETE FROM hub_status WHERE worker = ?", [worker])

    def heartbeats(self) -> list[Heartbeat]:
        """Every worker's last heartbeat, by worker name."""
        return [Heartbeat(w, pid, s, u, b, bool(c), json.loads(st)) for w, pid, s, u, b, c, st in self.conn.execute(
            "SELECT worker, pid, started_at, updated_at, broker, connected, stats FROM hub_status ORDER BY worker")]

    def connected_workers(self) -> int:
        """How many workers say they are connected to the broker."""
        return int(self.conn.execute("SELECT COUNT(*) FROM hub_status WHERE connected = 1").fetchone()[0])

    # ------------------------------------------------------------------ adoption

    def claim_adoption(self, worker: str, adopter: str, now: float) -> str | None:
        """Insert the claim ``adopter`` adopts ``worker`` unless one exists; returns the adopter now recorded."""
        self.conn.execute("INSERT OR IGNORE INTO hub_adoptions (worker, adopter, since) VALUES (?, ?, ?)",
                          (worker, adopter, now))
        row = self.conn.execute("SELECT adopter FROM hub_adoptions WHERE worker = ?", (worker,)).fetchone()
        return row[0] if row else None

    def take_over_adoption(self, worker: str, adopter: str, previous: str | None, now: float) -> bool:
        """Move the claim on ``worker`` from ``previous`` (a dead adopter) to ``adopter``; False if someone was first."""
        cur = self.conn.execute("UPDATE hub_adoptions SET adopter = ?, since = ? WHERE worker = ? AND adopter = ?",
                                (adopter, now, worker, previous))
        return cur.rowcount == 1

    def release_adoption(self, worker: str, adopter: str) -> None:
        """Drop ``adopter``'s claim on ``worker``."""
        self.conn.execute("DELETE FROM hub_adoptions WHERE worker = ? AND adopter = ?", (worker, adopter))

    def adopter_of(self, worker: str) -> str | None:
        """Who holds the claim on ``worker`` now (None: nobody)."""
        row = self.conn.execute("SELECT adopter FROM hub_adoptions WHERE worker = ?", (worker,)).fetchone()
        return str(row[0]) if row else None
