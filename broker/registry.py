"""The device registry: who may connect, in which role, with which (hashed) secret.

It lives in the same SQLite file as the hub's data, so one file holds a whole fleet; the rows
are kept by :mod:`hub.storage.registry`, the rules (valid ids, hashing, no silent overwrite) here.
Roles: ``device`` (one physical device), ``hub`` (the hub service) and ``operator``
(the CLI and other tools that send commands).
"""

from __future__ import annotations

import time
from pathlib import Path

from broker.secrets import Scheme, hash_secret, new_secret, verify_secret
from hub.storage import QUOTA_FIELDS, Connection, Principal, PrincipalStore, QuotaStore, Role, open_database
from protocol.errors import FleetError
from protocol.topics import valid_device_id

__all__ = ["Principal", "Registry", "RegistryError", "Role", "role_subject"]


class RegistryError(FleetError):
    """A registry operation that cannot be done as asked."""


class Registry:
    """Device registry backed by the ``principals`` table of the fleet database.

    Takes an open connection, or a path to open (``readonly`` for listings: never creates the file).
    """

    def __init__(self, db: Connection | str | Path, *, readonly: bool = False) -> None:
        self.conn = open_database(db, readonly=readonly) if isinstance(db, (str, Path)) else db
        self.rows = PrincipalStore(self.conn)
        self.quotas = QuotaStore(self.conn)

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
        """Register ``principal_id`` and return its secret (shown once, stored only hashed).

        A secret generated here (``secret`` None) is stored with the fast keyed hash: it has
        256 bits of entropy, so a slow KDF would add nothing but login latency. A ``secret``
        given by the caller may have been chosen by a person and is stored with scrypt
        (:mod:`broker.secrets` explains both).
        """
        if not valid_device_id(principal_id):
            raise RegistryError(
                f"invalid id {principal_id!r}: use 1-32 letters, digits, '-' or '_', starting with a letter or digit"
            )
        existing = self.get(principal_id)
        if existing is not None and not replace:
            raise RegistryError(f"{existing.role.value} {principal_id!r} already exists (revoke it or use a new id)")
        scheme = Scheme.SCRYPT if secret else Scheme.HMAC_SHA256
        secret = secret or new_secret()
        stored = hash_secret(secret, scheme=scheme)
        self.rows.put(Principal(principal_id, Role(role), stored, time.time(), None, group, tuple(tags)))
        return secret

    def get(self, principal_id: str) -> Principal | None:
        """The principal called ``principal_id``, revoked or not, or None."""
        return self.rows.get(principal_id)

    def list(self, role: Role | None = None, group: str | None = None) -> list[Principal]:
        """All principals, optionally of one role or group, ordered by id."""
        return self.rows.list(role, group)

    def revoked(self) -> dict[str, float]:
        """Every revoked principal with the time it was revoked."""
        return self.rows.revoked()

    def revoke(self, principal_id: str) -> Principal:
        """Revoke ``principal_id``: it can no longer log in. Returns the updated principal."""
        if self.get(principal_id) is None:
            raise RegistryError(f"no device or user {principal_id!r} in the registry")
        self.rows.revoke(principal_id, time.time())
        principal = self.get(principal_id)
        assert principal is not None
        return principal

    def set_quota(self, subject: str, **fields: float | None) -> None:
        """Override the publish quota of a principal id, or of a role with ``role_subject(role)``.

        Fields are those of :class:`broker.quota.Quota`; a field left out (NULL) keeps the
        broker's default. A rate of 0 means unlimited. Replaces any earlier override.
        """
        unknown = set(fields) - set(QUOTA_FIELDS)
        if unknown:
            raise RegistryError(f"unknown quota field(s) {sorted(unknown)}: use {', '.join(QUOTA_FIELDS)}")
        self.quotas.put(subject, fields)

    def clear_quota(self, subject: str) -> None:
        """Remove the quota override of ``subject`` (back to the role's or the broker's default)."""
        self.quotas.delete(subject)

    def quota_override(self, principal_id: str, role: Role) -> dict[str, float | None]:
        """The quota fields set for ``role`` and then for ``principal_id`` (the latter wins)."""
        return {**self.quotas.get(role_subject(role)), **self.quotas.get(principal_id)}

    def ensure(self, principal_id: str, role: Role, secret: str) -> None:
        """Make sure ``principal_id`` exists with ``secret`` (used for the hub's own login)."""
        existing = self.get(principal_id)
        if existing and existing.active and existing.role is Role(role) and verify_secret(secret, existing.secret_hash):
            return
        self.add(principal_id, role, secret=secret, replace=True)


def role_subject(role: Role) -> str:
    """The quota subject that stands for every principal of ``role``."""
    return f"role:{Role(role).value}"
