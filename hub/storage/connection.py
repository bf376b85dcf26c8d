"""Opening fleet.db: the one place that connects to it.

:func:`open_database` opens for writing (WAL, busy timeout, schema brought to the current
version, the file created when missing). ``readonly=True`` is for the CLI's listings and the
dashboard: it never creates the file ("no database at PATH" instead) and never writes, except
that a file from an older release is upgraded once, in place, before it is read.
Every failure to open is a :class:`~hub.storage.errors.StorageError` with a one-line message.

``path`` may also name a PostgreSQL database (``postgresql://user@host/dbname``, see
:mod:`hub.storage.location`): the same calls then return a :class:`~hub.storage.postgres.PgConnection`
(schema brought to the same version; ``readonly`` sessions refuse writes), and :func:`transaction`
takes the write lock that stands for ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from hub.storage.dialect import is_pg
from hub.storage.errors import StorageError, storage_error
from hub.storage.location import postgres_url
from hub.storage.schema import CURRENT_VERSION, check_pg_version, check_version, migrate, migrate_postgres

if TYPE_CHECKING:
    from hub.storage.postgres import PgConnection

Connection: TypeAlias = "sqlite3.Connection | PgConnection"
"""A connection of the storage package: SQLite's, or PostgreSQL's behind the same surface."""

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another writer's lock before SQLite says "database is locked"."""

CACHE_KIB = 32 * 1024
"""Page cache of a writing connection: the writer touches one leaf page per series in a batch, so the
default 2 MB thrashes on a big fleet."""

READ_BUSY_TIMEOUT_S = 2.0
"""Readers (CLI, dashboard) never wait long: WAL readers only wait during a checkpoint or an upgrade."""


def open_database(path: str | Path, *, readonly: bool = False) -> Connection:
    """A connection to the fleet database at ``path``, in autocommit mode (transactions are explicit).

    Writable (the default): WAL journal, ``synchronous=NORMAL``, a busy timeout, the schema migrated
    to the current version; the file is created when it does not exist. ``readonly``: the file must
    exist. Raises :class:`StorageError` for a missing, unreadable, locked or foreign file.
    """
    url = postgres_url(path)
    if url is not None:
        return _open_postgres(url, readonly=readonly)
    p = Path(path)
    if p.is_dir():
        raise StorageError(p, f"{p} is a folder, not a fleet database", "pass --db with a file path")
    if readonly:
        return _open_readonly(p)
    try:
        conn = sqlite3.connect(str(p), timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
    except (sqlite3.Error, OSError) as exc:
        raise storage_error(p, exc) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        migrate(conn, p)
    except StorageError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise storage_error(p, exc) from None
    return conn


def _open_postgres(url: str, *, readonly: bool) -> PgConnection:
    """A PostgreSQL connection with the schema at the current version (readonly: upgraded once, then read-only)."""
    from hub.storage.postgres import PgConnection  # psycopg is imported only by processes that use PostgreSQL

    conn = PgConnection(url, readonly=readonly)
    try:
        if readonly:
            if check_pg_version(conn) != CURRENT_VERSION:
                conn.close()
                _open_postgres(url, readonly=False).close()  # an empty or older database: made current once
                return _open_postgres(url, readonly=True)
        else:
            migrate_postgres(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(conn.name, f"the PostgreSQL database {conn.name} cannot be used ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _open_readonly(p: Path) -> sqlite3.Connection:
    if not p.exists():
        raise StorageError(p, f"no database at {p}",
                           "start the hub or the broker once (fleet up), or pass --db / set FLEET_DB")
    try:
        conn = _connect_readonly(p, immutable=False)
        try:
            version = check_version(conn, p)
        except sqlite3.OperationalError:
            conn.close()
            # a WAL database in a read-only folder: SQLite cannot make the -shm file it needs to read
            # safely, and nobody can write there either, so reading it as immutable is exact (unless a
            # -wal file holds commits not yet in the database file: then the error stands)
            wal = p.with_name(p.name + "-wal")
            if os.access(p.parent, os.W_OK) or (wal.exists() and wal.stat().st_size > 0):
                raise
            conn = _connect_readonly(p, immutable=True)
            version = check_version(conn, p)
    except sqlite3.Error as exc:
        raise storage_error(p, exc) from None
    if version == CURRENT_VERSION:
        return conn
    conn.close()
    open_database(p).close()  # a file of an older release: upgrade it in place once, then read it
    return _open_readonly(p)


def _connect_readonly(p: Path, *, immutable: bool) -> sqlite3.Connection:
    uri = f"{p.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, timeout=READ_BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(READ_BUSY_TIMEOUT_S * 1000)}")
    return conn


@contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """One write transaction (``BEGIN IMMEDIATE``, or its PostgreSQL twin: the write lock): committed at the
    end, rolled back when the block raises.

    Inside a transaction already open on ``conn`` it is a savepoint instead: the outer block commits,
    a failure of the inner block undoes only the inner block (one commit for a batch of writes that
    each take their own ``transaction``, such as a command request to 1,000 devices).
    """
    if conn.in_transaction:
        with _savepoint(conn):
            yield conn
        return
    if is_pg(conn):
        pg: PgConnection = conn  # type: ignore[assignment]
        pg.begin_write()
        try:
            yield conn
        except BaseException:
            pg.rollback()
            raise
        pg.commit()
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_savepoints = itertools.count(1)


@contextmanager
def _savepoint(conn: Connection) -> Iterator[None]:
    run = conn.execute_native if is_pg(conn) else conn.execute  # type: ignore[union-attr]
    name = f"fleet_sp{next(_savepoints)}"
    run(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        # a PostgreSQL transaction is unusable after a failed statement until rolled back to here
        if not (is_pg(conn) and conn.lost):  # type: ignore[union-attr]
            run(f"ROLLBACK TO SAVEPOINT {name}")
            run(f"RELEASE SAVEPOINT {name}")
        raise
    run(f"RELEASE SAVEPOINT {name}")


@contextmanager
def reading(path: str | Path) -> Iterator[Connection]:
    """A read-only connection for one query or a few; SQLite errors while reading become StorageError."""
    conn = open_database(path, readonly=True)
    try:
        yield conn
    except sqlite3.Error as exc:
        raise storage_error(path, exc) from None
    finally:
        conn.close()


def dict_rows(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts keyed by column name."""
    cur = conn.execute(sql, params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]
