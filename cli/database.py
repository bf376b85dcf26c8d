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
from cli.errors import NotFound
from hub.storage import StorageError, open_database


def existing_database(db: Path) -> Path:
    """``db`` if it is a fleet database we can read; else a one-line error (exit 9), nothing created.

    The read-only open of :mod:`hub.storage` never creates the file and refuses a foreign one.
    """
    open_database(db, readonly=True).close()  # StorageError -> cli.errors: one line, exit 9
    return db


def probe_password(db: Path) -> str | None:
    """The operator password ``fleet status`` logs in with: $FLEET_OPERATOR_PASSWORD, else the local operator
    account of ``db`` (made on first use, as ``fleet send`` does), else None when it cannot be made."""
    if os.environ.get("FLEET_OPERATOR_PASSWORD"):
        return os.environ["FLEET_OPERATOR_PASSWORD"]
    try:
        return ensure_local_principal(db, "operator", Role.OPERATOR)
    except (StorageError, sqlite3.Error, OSError):  # a read-only folder: probe without a login
        return None


def known_device(db: Path, device_id: str) -> None:
    """Raise :class:`NotFound` unless ``device_id`` is registered in ``db`` (revoked devices count)."""
    if Registry(db, readonly=True).get(device_id) is None:
        raise NotFound(f"unknown device {device_id!r}", "`fleet devices list` shows the registered ones")
