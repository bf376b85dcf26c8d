"""The ``principals`` table: who may connect, in which role, with which (hashed) secret; and the
``quotas`` table: the broker's publish quota overrides per principal or role.

Rules (valid ids, hashing, "already exists") live in :mod:`broker.registry`; this module only
reads and writes rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from hub.storage.connection import Connection


class Role(StrEnum):
    DEVICE = "device"
    HUB = "hub"
    OPERATOR = "operator"


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


_COLUMNS = "id, role, secret_hash, created_at, revoked_at, grp, tags"


class PrincipalStore:
    """Rows of the ``principals`` table on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def put(self, principal: Principal) -> None:
        """Insert ``principal``, replacing a row with the same id."""
        self.conn.execute(
            f"INSERT OR REPLACE INTO principals ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [principal.id, principal.role.value, principal.secret_hash, principal.created_at, principal.revoked_at,
             principal.group, json.dumps(list(principal.tags))],
        )

    def get(self, principal_id: str) -> Principal | None:
        """The principal called ``principal_id``, revoked or not, or None."""
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM principals WHERE id = ?", [principal_id]).fetchone()
        return _principal(row) if row else None

    def list(self, role: Role | None = None, group: str | None = None) -> list[Principal]:
        """All principals, optionally of one role or group, ordered by id."""
        sql = f"SELECT {_COLUMNS} FROM principals WHERE 1=1"
        params: list[object] = []
        if role is not None:
            sql += " AND role = ?"
            params.append(Role(role).value)
        if group is not None:
            sql += " AND grp = ?"
            params.append(group)
        return [_principal(r) for r in self.conn.execute(sql + " ORDER BY id", params).fetchall()]

    def revoke(self, principal_id: str, at: float) -> None:
        """Mark ``principal_id`` revoked at ``at`` (a second revoke keeps the first time)."""
        self.conn.execute("UPDATE principals SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", [at, principal_id])

    def revoked(self) -> dict[str, float]:
        """Every revoked principal with the time it was revoked."""
        return dict(self.conn.execute("SELECT id, revoked_at FROM principals WHERE revoked_at IS NOT NULL").fetchall())

    def active_devices(self, device_ids: Iterable[str]) -> set[str]:
        """The ids among ``device_ids`` that are registered, active devices."""
        ids = list(device_ids)
        found: set[str] = set()
        for i in range(0, len(ids), 500):  # SQLite's limit on bound variables
            chunk = ids[i:i + 500]
            rows = self.conn.execute(
                f"SELECT id FROM principals WHERE id IN ({','.join('?' * len(chunk))}) AND role = ?"
                " AND revoked_at IS NULL", [*chunk, Role.DEVICE.value])
            found.update(r[0] for r in rows)
        return found

    def device_groups(self) -> dict[str, str | None]:
        """Active devices with their group."""
        return dict(self.conn.execute(
            "SELECT id, grp FROM principals WHERE role = ? AND revoked_at IS NULL", [Role.DEVICE.value]).fetchall())


QUOTA_FIELDS = ("msgs_per_s", "burst_msgs", "bytes_per_s", "burst_bytes", "hard_limit_s")
"""The columns of ``quotas`` after ``subject`` (the fields of ``broker.quota.Quota``)."""


class QuotaStore:
    """Rows of the ``quotas`` table on one connection (rules in ``broker.registry``/``broker.quota``)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def put(self, subject: str, fields: dict[str, float | None]) -> None:
        """Set the override of ``subject`` (fields left out are NULL), replacing any earlier one."""
        self.conn.execute(
            f"INSERT OR REPLACE INTO quotas (subject, {', '.join(QUOTA_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?)",
            [subject, *(fields.get(name) for name in QUOTA_FIELDS)],
        )

    def delete(self, subject: str) -> None:
        """Remove the override of ``subject``."""
        self.conn.execute("DELETE FROM quotas WHERE subject = ?", [subject])

    def get(self, subject: str) -> dict[str, float]:
        """The non-null fields set for ``subject`` (empty when none)."""
        row = self.conn.execute(f"SELECT {', '.join(QUOTA_FIELDS)} FROM quotas WHERE subject = ?",
                                [subject]).fetchone()
        return {k: v for k, v in zip(QUOTA_FIELDS, row, strict=True) if v is not None} if row else {}


def _principal(row: tuple) -> Principal:  # type: ignore[type-arg]
    pid, role, secret_hash, created_at, revoked_at, grp, tags = row
    return Principal(pid, Role(role), secret_hash, created_at, revoked_at, grp, tuple(json.loads(tags or "[]")))
