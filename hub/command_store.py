"""Commands in SQLite: each command, its current state, and the history of its states.

The hub records a command here before it publishes it, so a command in flight survives a
hub restart: on start the hub reloads every command that has not reached a final state.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlite_utils

from broker.registry import open_db


class HubState(StrEnum):
    """The states of a command, as the hub tracks them."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"


FINAL = frozenset({HubState.SUCCEEDED, HubState.FAILED, HubState.REJECTED, HubState.EXPIRED, HubState.TIMED_OUT})
ACTIVE = (HubState.QUEUED, HubState.SENT, HubState.DELIVERED)


def new_command_id() -> str:
    """A short random command id (16 base32-ish characters)."""
    return "c" + secrets.token_hex(8)


@dataclass(slots=True)
class CommandRecord:
    id: str
    device_id: str
    name: str
    args: dict[str, Any]
    state: HubState
    created_at: float
    updated_at: float
    expires_at: float
    attempts: int = 0
    next_attempt_at: float | None = None
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    operator: str | None = None
    owner: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def public(self) -> dict[str, Any]:
        """The fields shown by ``fleet commands`` (JSON-ready)."""
        return {
            "id": self.id, "device_id": self.device_id, "name": self.name, "args": self.args,
            "state": self.state.value, "created_at": self.created_at, "updated_at": self.updated_at,
            "expires_at": self.expires_at, "attempts": self.attempts, "detail": self.detail,
            "result": self.result, "operator": self.operator,
        }


_COLUMNS = ("id, device_id, name, args, state, created_at, updated_at, expires_at, attempts, next_attempt_at, "
            "detail, result, operator, owner")


class CommandStore:
    """Reads and writes the ``commands`` and ``command_events`` tables."""

    def __init__(self, db: sqlite_utils.Database | str) -> None:
        self.db = db if isinstance(db, sqlite_utils.Database) else open_db(db)
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        self.db.execute(
            """CREATE TABLE IF NOT EXISTS commands (
                id TEXT PRIMARY KEY,
                device_id TEXT NOT NULL,
                name TEXT NOT NULL,
                args TEXT NOT NULL DEFAULT '{}',
                state TEXT NOT NULL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at REAL,
                detail TEXT NOT NULL DEFAULT '',
                result TEXT NOT NULL DEFAULT '{}',
                operator TEXT,
                owner TEXT
            )"""
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS commands_device ON commands(device_id, created_at)")
        self.db.execute("CREATE INDEX IF NOT EXISTS commands_state ON commands(state, next_attempt_at)")
        self.db.execute(
            """CREATE TABLE IF NOT EXISTS command_events (
                command_id TEXT NOT NULL,
                state TEXT NOT NULL,
                ts REAL NOT NULL,
                detail TEXT NOT NULL DEFAULT ''
            )"""
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS command_events_cmd ON command_events(command_id, ts)")

    def create(self, device_id: str, name: str, args: dict[str, Any], ttl_s: float, *,
               operator: str | None = None, owner: str | None = None, now: float | None = None,
               command_id: str | None = None) -> CommandRecord:
        """Record a new command in state ``queued`` (committed before anything is published)."""
        now = time.time() if now is None else now
        rec = CommandRecord(command_id or new_command_id(), device_id, name, dict(args), HubState.QUEUED, now, now,
                            now + ttl_s, operator=operator, owner=owner)
        with self._tx():
            self.db.execute(
                f"INSERT INTO commands ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [rec.id, rec.device_id, rec.name, json.dumps(rec.args), rec.state.value, rec.created_at,
                 rec.updated_at, rec.expires_at, 0, None, "", "{}", operator, owner],
            )
            self.db.execute("INSERT INTO command_events VALUES (?,?,?,?)", [rec.id, rec.state.value, now, ""])
        return rec

    def transition(self, rec: CommandRecord, state: HubState, *, detail: str = "", result: dict[str, Any] | None = None,
                   attempts: int | None = None, next_attempt_at: float | None = None, now: float | None = None,
                   expect: tuple[HubState, ...] | None = None) -> bool:
        """Move ``rec`` to ``state`` and append the change to its history (one transaction).

        With ``expect``, only if the row is still in one of those states (a conditional UPDATE:
        several hub workers may act on one command); returns False, and leaves ``rec`` as it was,
        when another writer moved it first.
        """
        now = time.time() if now is None else now
        new_detail = detail or rec.detail
        new_result = rec.result if result is None else result
        new_attempts = rec.attempts if attempts is None else attempts
        sql = "UPDATE commands SET state=?, updated_at=?, detail=?, result=?, attempts=?, next_attempt_at=? WHERE id=?"
        params: list[Any] = [state.value, now, new_detail, json.dumps(new_result), new_attempts, next_attempt_at, rec.id]
        if expect is not None:
            sql += f" AND state IN ({','.join('?' * len(expect))})"
            params += [s.value for s in expect]
        with self._tx():
            if self.db.execute(sql, params).rowcount != 1:
                return False
            self.db.execute("INSERT INTO command_events VALUES (?,?,?,?)", [rec.id, state.value, now, detail])
        rec.state, rec.updated_at, rec.detail, rec.result = state, now, new_detail, new_result
        rec.attempts, rec.next_attempt_at = new_attempts, next_attempt_at
        return True

    def claim(self, command_id: str, owner: str) -> bool:
        """Take ownership of a command for one hub worker; False when another worker owns it."""
        cur = self.db.execute("UPDATE commands SET owner=? WHERE id=? AND (owner IS NULL OR owner=?)",
                              [owner, command_id, owner])
        return cur.rowcount == 1

    def get_many(self, command_ids: list[str]) -> list[CommandRecord]:
        """The commands with these ids (in chunks, so any number of ids fits SQLite's variable limit)."""
        found: list[CommandRecord] = []
        for i in range(0, len(command_ids), 500):
            chunk = command_ids[i:i + 500]
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM commands WHERE id IN ({','.join('?' * len(chunk))})",
                                   chunk).fetchall()
            found += [_record(r) for r in rows]
        return found

    def get(self, command_id: str) -> CommandRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM commands WHERE id=?", [command_id]).fetchone()
        return _record(row) if row else None

    def ids_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Up to ``limit`` command ids starting with ``prefix`` (for ``fleet commands show PREFIX``)."""
        rows = self.db.execute("SELECT id FROM commands WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT ?",
                               [len(prefix), prefix, limit]).fetchall()
        return [r[0] for r in rows]

    def active(self) -> list[CommandRecord]:
        """Every command not yet in a final state, oldest first."""
        marks = ",".join("?" * len(ACTIVE))
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM commands WHERE state IN ({marks}) ORDER BY created_at",
                               [s.value for s in ACTIVE]).fetchall()
        return [_record(r) for r in rows]

    def list(self, device_id: str | None = None, state: str | None = None, limit: int = 100) -> list[CommandRecord]:
        """Commands, newest first, optionally for one device and/or in one state."""
        sql = f"SELECT {_COLUMNS} FROM commands WHERE 1=1"
        params: list[Any] = []
        if device_id:
            sql += " AND device_id=?"
            params.append(device_id)
        if state:
            sql += " AND state=?"
            params.append(state)
        sql += " ORDER BY created_at DESC LIMIT ?"
        params.append(limit)
        return [_record(r) for r in self.db.execute(sql, params).fetchall()]

    def history(self, command_id: str) -> list[dict[str, Any]]:
        """The states a command went through, with timestamps, oldest first."""
        rows = self.db.execute("SELECT state, ts, detail FROM command_events WHERE command_id=? ORDER BY ts, rowid",
                               [command_id]).fetchall()
        return [{"state": s, "ts": ts, "detail": d} for s, ts, d in rows]

    def _tx(self) -> Any:
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (rollback on error)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.conn = db.conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _record(row: tuple) -> CommandRecord:
    (cid, device_id, name, args, state, created_at, updated_at, expires_at, attempts, next_attempt_at, detail,
     result, operator, owner) = row
    return CommandRecord(cid, device_id, name, json.loads(args), HubState(state), created_at, updated_at, expires_at,
                         attempts, next_attempt_at, detail, json.loads(result), operator, owner)
