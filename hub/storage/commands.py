"""Commands in SQLite: each command, its current state, and the history of its states.

The hub records a command here before it publishes it, so a command in flight survives a
hub restart: on start the hub reloads every command that has not reached a final state.
States are :class:`protocol.CommandState`, the one enum every side uses.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.storage.connection import Connection, open_database, transaction
from protocol.models import CommandState

ACTIVE_STATES = (CommandState.QUEUED, CommandState.SENT, CommandState.DELIVERED)
"""The states of a command the hub is still working on."""


def new_command_id() -> str:
    """A short random command id ("c" and 16 hex digits)."""
    return "c" + secrets.token_hex(8)


@dataclass(slots=True)
class CommandRecord:
    id: str
    device_id: str
    name: str
    args: dict[str, Any]
    state: CommandState
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
        return self.state.final

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
    """Reads and writes the ``commands`` and ``command_events`` tables.

    Takes a connection, or a path to open (``readonly`` for listings: never creates the file).
    """

    def __init__(self, db: Connection | str | Path, *, readonly: bool = False) -> None:
        self.conn = open_database(db, readonly=readonly) if isinstance(db, (str, Path)) else db

    def close(self) -> None:
        self.conn.close()

    def create(self, device_id: str, name: str, args: dict[str, Any], ttl_s: float, *,
               operator: str | None = None, owner: str | None = None, now: float | None = None,
               command_id: str | None = None) -> CommandRecord:
        """Record a new command in state ``queued`` (committed before anything is published)."""
        now = time.time() if now is None else now
        rec = CommandRecord(command_id or new_command_id(), device_id, name, dict(args), CommandState.QUEUED, now, now,
                            now + ttl_s, operator=operator, owner=owner)
        with transaction(self.conn):
            self.conn.execute(
                f"INSERT INTO commands ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [rec.id, rec.device_id, rec.name, json.dumps(rec.args), rec.state.value, rec.created_at,
                 rec.updated_at, rec.expires_at, 0, None, "", "{}", operator, owner],
            )
            self.conn.execute("INSERT INTO command_events (command_id, state, ts, detail) VALUES (?,?,?,?)",
                              [rec.id, rec.state.value, now, ""])
        return rec

    def count_unexpired(self, device_id: str, now: float) -> int:
        """Commands to ``device_id`` whose expiry has not passed, in any state (a device may still see them)."""
        row = self.conn.execute("SELECT COUNT(*) FROM commands WHERE device_id = ? AND expires_at > ?",
                                [device_id, now]).fetchone()
        return int(row[0])

    def transition(self, rec: CommandRecord, state: CommandState, *, detail: str = "",
                   result: dict[str, Any] | None = None, attempts: int | None = None,
                   next_attempt_at: float | None = None, now: float | None = None,
                   expect: tuple[CommandState, ...] | None = None) -> bool:
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
        with transaction(self.conn):
            if self.conn.execute(sql, params).rowcount != 1:
                return False
            self.conn.execute("INSERT INTO command_events (command_id, state, ts, detail) VALUES (?,?,?,?)",
                              [rec.id, state.value, now, detail])
        rec.state, rec.updated_at, rec.detail, rec.result = state, now, new_detail, new_result
        rec.attempts, rec.next_attempt_at = new_attempts, next_attempt_at
        return True

    def claim(self, command_id: str, owner: str) -> bool:
        """Take ownership of a command for one hub worker; False when another worker owns it."""
        cur = self.conn.execute("UPDATE commands SET owner=? WHERE id=? AND (owner IS NULL OR owner=?)",
                                [owner, command_id, owner])
        return cur.rowcount == 1

    def hand_over(self, from_owner: str, to_owner: str) -> int:
        """Give every unfinished command of ``from_owner`` (a dead worker) to ``to_owner``; returns how many."""
        marks = ",".join("?" * len(ACTIVE_STATES))
        cur = self.conn.execute(f"UPDATE commands SET owner = ? WHERE owner = ? AND state IN ({marks})",
                                [to_owner, from_owner, *(s.value for s in ACTIVE_STATES)])
        return cur.rowcount

    def get_many(self, command_ids: list[str]) -> list[CommandRecord]:
        """The commands with these ids (in chunks, so any number of ids fits SQLite's variable limit)."""
        found: list[CommandRecord] = []
        for i in range(0, len(command_ids), 500):
            chunk = command_ids[i:i + 500]
            rows = self.conn.execute(f"SELECT {_COLUMNS} FROM commands WHERE id IN ({','.join('?' * len(chunk))})",
                                     chunk).fetchall()
            found += [_record(r) for r in rows]
        return found

    def get(self, command_id: str) -> CommandRecord | None:
        """One command, or None."""
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM commands WHERE id=?", [command_id]).fetchone()
        return _record(row) if row else None

    def ids_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Up to ``limit`` command ids starting with ``prefix`` (for ``fleet commands show PREFIX``)."""
        rows = self.conn.execute("SELECT id FROM commands WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT ?",
                                 [len(prefix), prefix, limit]).fetchall()
        return [r[0] for r in rows]

    def active(self) -> list[CommandRecord]:
        """Every command not yet in a final state, oldest first."""
        marks = ",".join("?" * len(ACTIVE_STATES))
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM commands WHERE state IN ({marks}) ORDER BY created_at",
                                 [s.value for s in ACTIVE_STATES]).fetchall()
        return [_record(r) for r in rows]

    def list(self, device_id: str | None = None, state: CommandState | str | None = None,
             limit: int = 100) -> list[CommandRecord]:
        """Commands, newest first, optionally for one device and/or in one state."""
        sql = f"SELECT {_COLUMNS} FROM commands WHERE 1=1"
        params: list[Any] = []
        if device_id:
            sql += " AND device_id=?"
            params.append(device_id)
        if state:
            sql += " AND state=?"
            params.append(CommandState(state).value)
        sql += " ORDER BY created_at DESC LIMIT ?"
        params.append(limit)
        return [_record(r) for r in self.conn.execute(sql, params).fetchall()]

    def recent(self, limit: int) -> list[CommandRecord]:
        """The most recently changed commands, newest first (for the dashboard)."""
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM commands ORDER BY updated_at DESC LIMIT ?", [limit])
        return [_record(r) for r in rows.fetchall()]

    def history(self, command_id: str) -> list[dict[str, Any]]:
        """The states a command went through, with timestamps, oldest first."""
        rows = self.conn.execute("SELECT state, ts, detail FROM command_events WHERE command_id=? ORDER BY ts, rowid",
                                 [command_id]).fetchall()
        return [{"state": s, "ts": ts, "detail": d} for s, ts, d in rows]


def _record(row: tuple) -> CommandRecord:  # type: ignore[type-arg]
    (cid, device_id, name, args, state, created_at, updated_at, expires_at, attempts, next_attempt_at, detail,
     result, operator, owner) = row
    return CommandRecord(cid, device_id, name, json.loads(args), CommandState(state), created_at, updated_at,
                         expires_at, attempts, next_attempt_at, detail, json.loads(result), operator, owner)
