"""PostgreSQL behind the same stores: a connection that speaks the storage package's SQLite dialect.

The stores are written once, in SQLite's SQL, against a DB-API connection. :class:`PgConnection`
gives them a psycopg 3 connection with the same surface (``execute``, ``executemany``, ``close``)
and turns each statement into PostgreSQL's dialect once (:func:`hub.storage.dialect.to_postgres`,
cached per connection). Errors come out as the standard library's
``sqlite3`` DB-API classes (``IntegrityError`` for a unique violation, ``OperationalError`` for a lost
server...): the hub's retry loops and the CLI already name those, so they need not know the backend.

Write transactions: SQLite's ``BEGIN IMMEDIATE`` takes the database's one write lock. The twin here
is ``BEGIN`` plus a transaction-scoped advisory lock (:data:`WRITE_LOCK`), so write transactions of
all workers on all machines run one at a time exactly as they do on one SQLite file (the exactly-once
key is also a unique constraint, which holds on its own). Readers never wait (MVCC).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
import psycopg.errors

from hub.storage.dialect import returns_id, to_postgres
from hub.storage.errors import StorageError
from hub.storage.location import database_name, display_name

WRITE_LOCK = 0x666C656574  # "fleet": the advisory lock every write transaction takes
MIGRATION_LOCK = 0x666C656575  # the schema upgrade's lock (taken before WRITE_LOCK's users exist)

CONNECT_TIMEOUT_S = 10
"""How long opening waits for an unreachable server before saying so."""

# ---------------------------------------------------------------------------------------- errors


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _as_dbapi(exc: psycopg.Error) -> sqlite3.Error:
    """The ``sqlite3`` DB-API class that names the same kind of failure (callers catch those)."""
    text = f"PostgreSQL: {_one_line(exc)}"
    if isinstance(exc, psycopg.errors.IntegrityError):
        return sqlite3.IntegrityError(text)
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return sqlite3.OperationalError(f"attempt to write a readonly database ({text})")
    if isinstance(exc, psycopg.errors.DiskFull):
        return sqlite3.OperationalError(f"database or disk is full ({text})")
    if isinstance(exc, (psycopg.OperationalError, psycopg.errors.DeadlockDetected,
                        psycopg.errors.SerializationFailure, psycopg.errors.LockNotAvailable)):
        return sqlite3.OperationalError(text)
    if isinstance(exc, psycopg.ProgrammingError):
        return sqlite3.ProgrammingError(text)
    return sqlite3.DatabaseError(text)


def open_error(url: str, exc: psycopg.Error) -> StorageError:
    """Why a connection to ``url`` failed, as one line an operator can act on."""
    where = display_name(url)
    text = _one_line(exc)
    low = text.lower()
    if "does not exist" in low and "database" in low:
        name = database_name(url)
        return StorageError(where, f"no database {name!r} on the PostgreSQL server of {where}",
                            f"create it (createdb {name}) or pass --db / FLEET_DB with another one")
    if "authentication failed" in low or "no pg_hba.conf entry" in low or "password" in low:
        return StorageError(where, f"the PostgreSQL server refused the login for {where} ({text})",
                            "check the user and password in the URL (or ~/.pgpass) and pg_hba.conf")
    if "role" in low and "does not exist" in low:
        return StorageError(where, f"the PostgreSQL server has no such user for {where} ({text})",
                            "create the user (createuser) or put another one in the URL")
    if "connection refused" in low or "timeout" in low or "could not" in low or "no such file" in low \
            or "connection failed" in low or "translate host name" in low:
        return StorageError(where, f"cannot reach the PostgreSQL server of {where} ({text})",
                            "is it running and reachable? check host and port in --db / FLEET_DB")
    return StorageError(where, f"the PostgreSQL database {where} cannot be used ({text})")


# ---------------------------------------------------------------------------------------- connection


class _Inserted:
    """The cursor of an INSERT into an identity table: its rowcount and the new row's id (``lastrowid``)."""

    description = None

    def __init__(self, rowcount: int, lastrowid: int | None) -> None:
        self.rowcount, self.lastrowid = rowcount, lastrowid

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []


class PgConnection:
    """A psycopg 3 connection with the surface the stores use of ``sqlite3.Connection``.

    Autocommit outside explicit transactions, like the SQLite connections of the package.
    A connection the server dropped is made again on the next statement outside a transaction
    (inside one, the statement fails and the transaction rolls back, as SQLite's would on error).
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self.name = display_name(url)
        self._sql: dict[str, str] = {}
        self._pg = self._connect()
        self._staged: set[str] = set()
        self._staged_on: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="fleet-hub")
        except psycopg.Error as exc:
            raise open_error(self.url, exc) from None
        if self.readonly:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def _live(self) -> psycopg.Connection[Any]:
        pg = self._pg
        if (pg.closed or pg.broken) and not self.in_transaction:
            self._pg = pg = self._connect()
        return pg

    @property
    def in_transaction(self) -> bool:
        """True inside BEGIN ... COMMIT."""
        status = self._pg.info.transaction_status
        return status not in (psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.UNKNOWN)

    def _translate(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = to_postgres(sql)
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement (SQLite dialect); the cursor answers ``fetchone``/``fetchall``/``rowcount``/iteration.
        ``BEGIN IMMEDIATE`` begins a write transaction (:meth:`begin_write`)."""
        if sql == "BEGIN IMMEDIATE":
            self.begin_write()
            return self._pg.cursor()
        try:
            if returns_id(sql):  # SQLite's cursor.lastrowid, from RETURNING id
                cur = self._live().execute(self._translate(sql) + " RETURNING id", list(params) or None)  # type: ignore[arg-type]
                row = cur.fetchone()
                return _Inserted(cur.rowcount, row[0] if row else None)  # type: ignore[return-value]
            return self._live().execute(self._translate(sql), list(params) or None)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise _as_dbapi(exc) from exc

    def execute_native(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement already written for PostgreSQL (``%s`` placeholders)."""
        try:
            return self._live().execute(sql, list(params) or None)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise _as_dbapi(exc) from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        """Run one statement for each row (psycopg pipelines them: one round trip per batch, not per row)."""
        batch = [list(r) for r in rows]
        try:
            cur = self._live().cursor()
            if batch:
                cur.executemany(self._translate(sql), batch)  # type: ignore[arg-type]
            return cur
        except psycopg.Error as exc:
            raise _as_dbapi(exc) from exc

    def copy_insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], tail: str = "",
                    returning: bool = False) -> list[tuple[Any, ...]]:
        """Write ``rows`` into ``table`` the fast way: COPY into a session-private staging table (no SQL text
        per row: psycopg's placeholder parsing of a big multi-row INSERT costs more than the server's work),
        then one ``INSERT INTO table SELECT ... tail`` (``tail``: the conflict clause, SQLite dialect; with
        ``returning``, a RETURNING clause whose rows come back). Call it inside a transaction."""
        if not rows:
            return []
        stage = f"fleet_in_{table}"
        cols = ", ".join(columns)
        pg = self._live()
        try:
            if pg is not self._staged_on:
                self._staged.clear()
                self._staged_on = pg
            if stage not in self._staged:
                pg.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS)")
                self._staged.add(stage)
            with pg.cursor().copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur = pg.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} {self._translate(tail)}")
            got = cur.fetchall() if returning else []
            pg.execute(f"DELETE FROM {stage}")  # the next batch of this transaction starts empty
            return got
        except psycopg.Error as exc:
            raise _as_dbapi(exc) from exc

    def begin_write(self) -> None:
        """BEGIN a write transaction holding :data:`WRITE_LOCK` (the twin of SQLite's ``BEGIN IMMEDIATE``)."""
        self.execute_native("BEGIN")
        try:
            self.execute_native("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        """COMMIT the open transaction."""
        self.execute_native("COMMIT")

    @property
    def lost(self) -> bool:
        """The server dropped the connection (a transaction on it is gone; nothing to roll back)."""
        return bool(self._pg.closed or self._pg.broken)

    def rollback(self) -> None:
        """ROLLBACK the open transaction (nothing to do when the server already dropped the connection)."""
        if self.lost:
            return
        self.execute_native("ROLLBACK")

    def close(self) -> None:
        """Close the connection."""
        self._pg.close()
