"""Access control for the embedded broker: logins against the registry, and topic rules.

Password hashes are checked in a small dedicated thread pool, never on the event loop
(amqtt's own argon2 check blocks the loop; AMQTT_NOTES.md #9). A successful check is cached
per username and password digest, so a reconnecting device costs one SQL lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

from amqtt.session import Session

from broker.acl import Action, is_allowed
from broker.registry import Principal, Registry, Role
from broker.secrets import verify_secret

log = logging.getLogger("fleet.broker.access")

ANONYMOUS = "anonymous"


class AccessControl:
    """The broker's one authority on who may connect and which topics they may use."""

    def __init__(self, registry: Registry, *, allow_anonymous: bool = False, hash_workers: int = 2) -> None:
        self.registry = registry
        self.allow_anonymous = allow_anonymous
        self._pool = ThreadPoolExecutor(max_workers=hash_workers, thread_name_prefix="fleet-hash")
        self._verified: dict[str, tuple[bytes, str]] = {}
        self.failed_logins = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def forget(self, username: str) -> None:
        """Drop the cached login of ``username`` (after a revoke or a new secret)."""
        self._verified.pop(username, None)

    async def check_login(self, username: str | None, password: str | None, client_id: str | None) -> Principal | None:
        """The principal for these credentials, or None (and a log line saying why) when refused."""
        if username is None:
            if self.allow_anonymous:
                return None
            log.warning("login refused reason=no_credentials client_id=%s", client_id)
            return None
        principal = self.registry.get(username)
        if principal is None or not principal.active:
            self._refuse(username, client_id, "unknown_or_revoked")
            return None
        if principal.role is Role.DEVICE and client_id != username:
            self._refuse(username, client_id, "client_id_must_equal_username")
            return None
        secret = password or ""
        digest = hashlib.sha256(secret.encode()).digest()
        cached = self._verified.get(username)
        if cached is not None and cached == (digest, principal.secret_hash):
            return principal
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self._pool, verify_secret, secret, principal.secret_hash)
        if not ok:
            self._refuse(username, client_id, "bad_secret")
            return None
        self._verified[username] = (digest, principal.secret_hash)
        return principal

    def _refuse(self, username: str, client_id: str | None, reason: str) -> None:
        self.failed_logins += 1
        # never log the password
        log.warning("login refused reason=%s username=%s client_id=%s", reason, username, client_id)

    async def authenticate(self, session: Session) -> bool:
        """amqtt hook: True when the session's credentials are good; tags the session with its role."""
        if session.username is None and self.allow_anonymous:
            session.fleet_role = None  # type: ignore[attr-defined]
            return True
        principal = await self.check_login(session.username, session.password, session.client_id)
        if principal is None:
            return False
        session.fleet_role = principal.role  # type: ignore[attr-defined]
        return True

    def authorize(self, session: Session, action: Action, topic: str) -> bool:
        """amqtt hook: the ACL decision for one publish, subscribe or delivery. Must stay cheap."""
        role: Role | None = getattr(session, "fleet_role", None)
        if role is None:
            allowed = self.allow_anonymous and session.username is None
        else:
            allowed = is_allowed(role, session.username or "", action, topic)
        if not allowed and action is not Action.RECEIVE:
            log.warning("denied action=%s username=%s topic=%s", action.value, session.username, topic[:120])
        return allowed
