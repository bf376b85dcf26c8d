"""The device registry: who may connect, in which role, with which (hashed) secret.

It lives in the same SQLite file as the hub's data, so one file holds a whole fleet.
Roles: ``device`` (one physical device), ``hub`` (the hub service) and ``operator``
(the CLI and other tools that send commands).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import sqlite_utils

from broker.secrets import hash_secret, new_secret
from protocol.errors import FleetError
from protocol.topics import valid_device_id


class Role(StrEnum):
    DEVICE = "device"
    HUB = "hub"
    OPERATOR = "operator"


class RegistryError(FleetError):
    """A registry operation that cannot be done as asked."""


@dataclass(frozen=True, slots=True)
class Principal:
    """One registered identity: a device, the hub, or an operator."""

    id: str
    role: Role
    secret_hash: str = field(repr=False)
    created_at: float
    revoked_at: float | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """The fields safe to show (never the hash)."""
        return {
            "id": self.id,
            "role": self.role.value,
            "group": self.group,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open the fleet database file in WAL mode with a busy timeout, creating it if needed."""
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return sqlite_utils.Database(conn)


class Registry:
    """Device registry backed by the ``principals`` table of the fleet database."""

    TABLE = "principals"

    def __init__(self, db: sqlite_utils.Database | str | Path) -> None:
        self.db = db if isinstance(db, sqlite_utils.Database) else open_db(db)
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        self.db.execute(
            """CREATE TABLE IF NOT EXISTS principals (
                id TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                secret_hash TEXT NOT NULL,
                created_at REAL NOT NULL,
                revoked_at REAL,
                grp TEXT,
                tags TEXT NOT NULL DEFAULT '[]'
            )"""
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS principals_grp ON principals(grp)")
        # publish quotas (broker.quota): one row per principal id or per "role:<role>"; NULL = default
        self.db.execute(
            """CREATE TABLE IF NOT EXISTS quotas (
                subject TEXT PRIMARY KEY,
                msgs_per_s REAL,
                burst_msgs REAL,
                bytes_per_s REAL,
                burst_bytes REAL,
                hard_limit_s REAL
            )"""
        )

    def add(
        self,
        principal_id: str,
        role: Role = Role.DEVICE,
        *,
        group: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        secret: str | None = None,
        replace: bool = False,
    ) -> str:
        """Register ``principal_id`` and return its secret (shown once, stored only hashed)."""
        if not valid_device_id(principal_id):
            raise RegistryError(
                f"invalid id {principal_id!r}: use 1-32 letters, digits, '-' or '_', starting with a letter or digit"
            )
        existing = self.get(principal_id)
        if existing is not None and not replace:
            raise RegistryError(f"{existing.role.value} {principal_id!r} already exists (revoke it or use a new id)")
        secret = secret or new_secret()
        self.db.execute(
            """INSERT OR REPLACE INTO principals (id, role, secret_hash, created_at, revoked_at, grp, tags)
               VALUES (?, ?, ?, ?, NULL, ?, ?)""",
            [principal_id, Role(role).value, hash_secret(secret), time.time(), group, json.dumps(list(tags))],
        )
        return secret

    def get(self, principal_id: str) -> Principal | None:
        """The principal called ``principal_id``, revoked or not, or None."""
        row = self.db.execute(
            "SELECT id, role, secret_hash, created_at, revoked_at, grp, tags FROM principals WHERE id = ?",
            [principal_id],
        ).fetchone()
        return _principal(row) if row else None

    def list(self, role: Role | None = None, group: str | None = None) -> list[Principal]:
        """All principals, optionally of one role or group, ordered by id."""
        sql = "SELECT id, role, secret_hash, created_at, revoked_at, grp, tags FROM principals WHERE 1=1"
        params: list[object] = []
        if role is not None:
            sql += " AND role = ?"
            params.append(Role(role).value)
        if group is not None:
            sql += " AND grp = ?"
            params.append(group)
        return [_principal(r) for r in self.db.execute(sql + " ORDER BY id", params).fetchall()]

    def revoke(self, principal_id: str) -> Principal:
        """Revoke ``principal_id``: it can no longer log in. Returns the updated principal."""
        if self.get(principal_id) is None:
            raise RegistryError(f"no device or user {principal_id!r} in the registry")
        self.db.execute(
            "UPDATE principals SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", [time.time(), principal_id]
        )
        principal = self.get(principal_id)
        assert principal is not None
        return principal

    def set_quota(self, subject: str, **fields: float | None) -> None:
        """Override the publish quota of a principal id, or of a role with ``role_subject(role)``.

        Fields are those of :class:`broker.quota.Quota`; a field left out (NULL) keeps the
        broker's default. A rate of 0 means unlimited. Replaces any earlier override.
        """
        _set_quota(self, subject, fields)

    def clear_quota(self, subject: str) -> None:
        """Remove the quota override of ``subject`` (back to the role's or the broker's default)."""
        self.db.execute("DELETE FROM quotas WHERE subject = ?", [subject])

    def quota_override(self, principal_id: str, role: Role) -> dict[str, float | None]:
        """The quota fields set for ``role`` and then for ``principal_id`` (the latter wins)."""
        return _quota_rows(self, principal_id, role)

    def ensure(self, principal_id: str, role: Role, secret: str) -> None:
        """Make sure ``principal_id`` exists with ``secret`` (used for the hub's own login)."""
        from broker.secrets import verify_secret

        existing = self.get(principal_id)
        if existing and existing.active and existing.role is Role(role) and verify_secret(secret, existing.secret_hash):
            return
        self.add(principal_id, role, secret=secret, replace=True)


QUOTA_FIELDS = ("msgs_per_s", "burst_msgs", "bytes_per_s", "burst_bytes", "hard_limit_s")


def role_subject(role: Role) -> str:
    """The quota subject that stands for every principal of ``role``."""
    return f"role:{Role(role).value}"


def _set_quota(registry: Registry, subject: str, fields: dict[str, float | None]) -> None:
    unknown = set(fields) - set(QUOTA_FIELDS)
    if unknown:
        raise RegistryError(f"unknown quota field(s) {sorted(unknown)}: use {', '.join(QUOTA_FIELDS)}")
    values = [fields.get(name) for name in QUOTA_FIELDS]
    registry.db.execute(
        f"INSERT OR REPLACE INTO quotas (subject, {', '.join(QUOTA_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?)",
        [subject, *values],
    )


def _quota_rows(registry: Registry, principal_id: str, role: Role) -> dict[str, float | None]:
    merged: dict[str, float | None] = {}
    for subject in (role_subject(role), principal_id):  # the principal's own row wins
        row = registry.db.execute(
            f"SELECT {', '.join(QUOTA_FIELDS)} FROM quotas WHERE subject = ?", [subject]
        ).fetchone()
        if row:
            merged |= {k: v for k, v in zip(QUOTA_FIELDS, row, strict=True) if v is not None}
    return merged


def _principal(row: tuple) -> Principal:
    pid, role, secret_hash, created_at, revoked_at, grp, tags = row
    return Principal(pid, Role(role), secret_hash, created_at, revoked_at, grp, tuple(json.loads(tags or "[]")))
