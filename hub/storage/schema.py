"""The schema of fleet.db and its versioned migrations (``PRAGMA user_version``).

Every process that opens the database for writing brings it to :data:`CURRENT_VERSION` first
(:func:`migrate`, called by :func:`hub.storage.connection.open_database`), so tables never
"appear later" and no reader checks whether a table exists.

Versions
    0   an empty file, or a file written before the schema had a version. Files of the release
        before this package have ``user_version`` 0 and some or all of the version-1 tables
        (each component created its own): migration 1 creates the missing ones.
    1   the schema of that release, unchanged (so its files upgrade without touching a row).

A migration runs inside one ``BEGIN IMMEDIATE`` transaction together with the new
``user_version``: several processes may open the file at once, and exactly one of them upgrades
it while the others wait on the lock and then find it done.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from hub.storage.errors import StorageError

# Version 1: the tables as the release before this package created them (byte-for-byte the same DDL,
# so an upgraded file and a new one are the same).
V1_TABLES: dict[str, str] = {
    "principals": """CREATE TABLE IF NOT EXISTS principals (
                id TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                secret_hash TEXT NOT NULL,
                created_at REAL NOT NULL,
                revoked_at REAL,
                grp TEXT,
                tags TEXT NOT NULL DEFAULT '[]'
            )""",
    "messages": """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    received_at REAL NOT NULL,
    skewed INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, boot, seq)
)""",
    "readings": """CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    skewed INTEGER NOT NULL DEFAULT 0
)""",
    "latest": """CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, metric)
) WITHOUT ROWID""",
    "alerts": """CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    code TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (device_id, boot, seq)
)""",
    "streams": """CREATE TABLE IF NOT EXISTS streams (
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL,
    PRIMARY KEY (device_id, boot)
) WITHOUT ROWID""",
    "gaps": """CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    missing INTEGER NOT NULL,
    detected_at REAL NOT NULL,
    closed_at REAL
)""",
    "deadletters": """CREATE TABLE IF NOT EXISTS deadletters (
    id INTEGER PRIMARY KEY,
    device_id TEXT,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL
)""",
    "command_replies": """CREATE TABLE IF NOT EXISTS command_replies (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    result TEXT NOT NULL,
    received_at REAL NOT NULL
)""",
    "devices": """CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    state_reason TEXT NOT NULL,
    state_since REAL NOT NULL,
    last_seen REAL,
    fw TEXT,
    boot INTEGER,
    enc TEXT,
    interval_s INTEGER
)""",
    "presence_events": """CREATE TABLE IF NOT EXISTS presence_events (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    boot INTEGER,
    ts REAL NOT NULL
)""",
    "commands": """CREATE TABLE IF NOT EXISTS commands (
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
            )""",
    "command_events": """CREATE TABLE IF NOT EXISTS command_events (
                command_id TEXT NOT NULL,
                state TEXT NOT NULL,
                ts REAL NOT NULL,
                detail TEXT NOT NULL DEFAULT ''
            )""",
    "hub_status": """CREATE TABLE IF NOT EXISTS hub_status (
    worker TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    broker TEXT NOT NULL,
    connected INTEGER NOT NULL,
    stats TEXT NOT NULL
)""",
    "hub_adoptions": """CREATE TABLE IF NOT EXISTS hub_adoptions (
    worker TEXT PRIMARY KEY,
    adopter TEXT NOT NULL,
    since REAL NOT NULL
)""",
}

V1_INDEXES = (
    "CREATE INDEX IF NOT EXISTS principals_grp ON principals(grp)",
    "CREATE INDEX IF NOT EXISTS readings_device_ts ON readings (device_id, ts)",
    "CREATE INDEX IF NOT EXISTS gaps_open ON gaps (device_id, boot) WHERE missing > 0",
    "CREATE INDEX IF NOT EXISTS deadletters_reason ON deadletters (reason)",
    "CREATE INDEX IF NOT EXISTS command_replies_cmd ON command_replies (command_id)",
    "CREATE INDEX IF NOT EXISTS presence_events_device ON presence_events (device_id, ts)",
    "CREATE INDEX IF NOT EXISTS commands_device ON commands(device_id, created_at)",
    "CREATE INDEX IF NOT EXISTS commands_state ON commands(state, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS command_events_cmd ON command_events(command_id, ts)",
)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _expected_columns(table: str) -> set[str]:
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(V1_TABLES[table])
        return set(_columns(mem, table))
    finally:
        mem.close()


def _to_v1(conn: sqlite3.Connection, path: Path) -> None:
    """Version 0 -> 1: check that the tables already there are ours, then create the missing ones."""
    existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in V1_TABLES.keys() & existing:
        missing = _expected_columns(table) - set(_columns(conn, table))
        if missing:
            raise StorageError(path, f"{path} is not a fleet database: its table {table!r} lacks {sorted(missing)}",
                               "pass --db with the right file, or move this one away")
    for ddl in (*V1_TABLES.values(), *V1_INDEXES):
        conn.execute(ddl)


Migration = Callable[[sqlite3.Connection, Path], None]

MIGRATIONS: tuple[Migration, ...] = (_to_v1,)
"""``MIGRATIONS[n - 1]`` brings a file from version ``n - 1`` to version ``n``."""

CURRENT_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the file."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's version; StorageError when it was written by a newer release."""
    version = user_version(conn)
    if version > CURRENT_VERSION:
        raise StorageError(path, f"{path} has schema version {version}, newer than this fleet-hub knows "
                           f"({CURRENT_VERSION})", "upgrade fleet-hub, or use the release that wrote it")
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the database to :data:`CURRENT_VERSION` in one transaction; returns the version it had."""
    if check_version(conn, path) == CURRENT_VERSION:
        return CURRENT_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = check_version(conn, path)  # another process may have upgraded it while we waited for the lock
        for migration in MIGRATIONS[found:]:
            migration(conn, path)
        conn.execute(f"PRAGMA user_version = {CURRENT_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
