"""Local service credentials: a secret kept in a 0600 file next to the database.

The registry stores only hashes, so a service that must log in again after a restart (the
hub, the CLI's operator account, the simulator) keeps its plaintext secret in a file that
only its user can read, and re-registers it when the registry does not match.
"""

from __future__ import annotations

import os
import secrets
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
    return read_or_create_secret(secret_path(db, principal_id))


def read_or_create_secret(path: Path) -> str:
    """The secret in ``path``; when there is none, a new one written there (mode 0600).

    Several processes may start at once on one database (a worker group): the file appears
    whole or not at all (written under a private name, then hard-linked into place), so a
    process that loses the race reads the winner's secret, never an empty file.
    """
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = new_secret()
    private = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:  # a read-only folder: name the file the operator knows, not the private one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.link(private, path)
    except FileExistsError:  # another process published first: use theirs
        return path.read_text().strip()
    finally:
        private.unlink(missing_ok=True)
    return secret


def ensure_local_principal(db: Path, principal_id: str, role: Role) -> str:
    """Register ``principal_id`` in ``db``'s registry with its local secret; return the secret."""
    registry = Registry(db)  # first: a database that cannot be opened is the error to report, not the secret file
    secret = local_secret(db, principal_id)
    registry.ensure(principal_id, role, secret)
    return secret
