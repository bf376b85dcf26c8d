"""The CLI's checks on the fleet database before a command reads it.

A read-only command (listings, export, status) must never create ``fleet.db``: typed in the
wrong folder it would leave an empty database behind and print ``[]`` as if all were well.
It calls :func:`existing_database` first, which says in one line what is wrong instead.
Lookups that turn an unknown name into an error (never an empty listing) live here too.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from broker.credentials import ensure_local_principal
from broker.registry import Registry, Role
from cli.errors import CliError, ExitCode, NotFound, from_sqlite


def existing_database(db: Path) -> Path:
    """``db`` if it is an SQLite file we can read; else a :class:`CliError` (nothing is created)."""
    if not db.exists():
        raise CliError(f"no fleet database at {db}", ExitCode.DATABASE,
                       "run this where `fleet up` or `fleet hub` ran, or give --db")
    if db.is_dir():
        raise CliError(f"{db} is a folder, not a fleet database", ExitCode.DATABASE, "give the file with --db")
    try:  # read-only probe: a garbage file fails here without being touched
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise from_sqlite(exc, db) from None
    return db


def probe_password(db: Path) -> str | None:
    """The operator password ``fleet status`` logs in with: $FLEET_OPERATOR_PASSWORD, else the local operator
    account of ``db`` (made on first use, as ``fleet send`` does), else None when it cannot be made."""
    if os.environ.get("FLEET_OPERATOR_PASSWORD"):
        return os.environ["FLEET_OPERATOR_PASSWORD"]
    try:
        return ensure_local_principal(db, "operator", Role.OPERATOR)
    except (sqlite3.Error, OSError):  # a read-only folder: probe without a login
        return None


def known_device(db: Path, device_id: str) -> None:
    """Raise :class:`NotFound` unless ``device_id`` is registered in ``db`` (revoked devices count)."""
    if Registry(db).get(device_id) is None:
        raise NotFound(f"unknown device {device_id!r}", "`fleet devices list` shows the registered ones")
