"""Local service credentials: a secret kept in a 0600 file next to the database.

The registry stores only hashes, so a service that must log in again after a restart (the
hub, the CLI's operator account, the simulator) keeps its plaintext secret in a file that
only its user can read, and re-registers it when the registry does not match.
"""

from __future__ import annotations

import os
from pathlib import Path

from broker.registry import Registry, Role
from broker.secrets import new_secret
from hub.storage.location import side_base


def secret_path(db: Path, principal_id: str) -> Path:
    """Where the secret of ``principal_id`` is kept for the database ``db``."""
    base = side_base(db)  # beside a SQLite file; in the working folder for PostgreSQL
    return base.with_name(f"{base.name}.{principal_id}-secret")


def local_secret(db: Path, principal_id: str) -> str:
    """The secret stored for ``principal_id`` next to ``db``, created (mode 0600) when missing."""
    path = secret_path(db, principal_id)
    if path.exists():
        return path.read_text().strip()
    secret = new_secret()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first; use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def ensure_local_principal(db: Path, principal_id: str, role: Role) -> str:
    """Register ``principal_id`` in ``db``'s registry with its local secret; return the secret."""
    registry = Registry(db)  # first: a database that cannot be opened is the error to report, not the secret file
    secret = local_secret(db, principal_id)
    registry.ensure(principal_id, role, secret)
    return secret
