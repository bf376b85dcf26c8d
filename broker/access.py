"""Access control for the embedded broker: logins against the registry, and topic rules.

Slow (scrypt) password hashes are checked in a small dedicated thread pool, never on the event
loop (amqtt's own argon2 check blocks the loop; AMQTT_NOTES.md #9); the fast keyed hashes of
generated device secrets (about 1 µs, :mod:`broker.secrets`) are checked inline, which spares
the thread hop and keeps a device's first login near the cost of the CONNECT itself. A successful check is cached
per username and password digest, so a reconnecting device costs one SQL lookup. Failed
checks back off per device id and per source address (:mod:`broker.login_throttle`), checks of
one id run one at a time (so concurrent guesses cannot all slip through before the first
failure is counted), and every refusal or denial is logged through a :class:`LogSummary`
(once per interval per name, then a count).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

from amqtt.session import Session

from broker.acl import Action, is_allowed
from broker.log_summary import LogSummary, clip
from broker.login_throttle import LoginThrottle
from broker.registry import Principal, Registry, Role
from broker.secrets import is_fast, verify_secret
from broker.stats import BrokerCounters

log = logging.getLogger("fleet.broker.access")

ANONYMOUS = "anonymous"


class AccessControl:
    """The broker's one authority on who may connect and which topics they may use."""

    def __init__(self, registry: Registry, *, allow_anonymous: bool = False, hash_workers: int = 2,
                 throttle: LoginThrottle | None = None, notes: LogSummary | None = None,
                 counters: BrokerCounters | None = None) -> None:
        self.registry = registry
        self.allow_anonymous = allow_anonymous
        self._pool = ThreadPoolExecutor(max_workers=hash_workers, thread_name_prefix="fleet-hash")
        self._verified: dict[str, tuple[bytes, str]] = {}
        self._checking: dict[str, asyncio.Lock] = {}
        self.throttle = throttle or LoginThrottle()
        self.notes = notes or LogSummary(log)
        self.counters = counters or BrokerCounters()
        self.failed_logins = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def forget(self, username: str) -> None:
        """Drop the cached login of ``username`` (after a revoke or a new secret)."""
        self._verified.pop(username, None)

    async def check_login(self, username: str | None, password: str | None, client_id: str | None,
                          address: str | None = None) -> Principal | None:
        """The principal for these credentials, or None (and a log line saying why) when refused.

        ``retry_in(username, address)`` tells afterwards how long the caller backs off.
        """
        if username is None:
            if self.allow_anonymous:
                return None
            self._refuse(str(client_id), client_id, "no_credentials", address)
            return None
        principal = self.registry.get(username)
        if principal is None or not principal.active:
            self._refuse(username, client_id, "unknown_or_revoked", address)
            return None
        if principal.role is Role.DEVICE and client_id != username:
            self._refuse(username, client_id, "client_id_must_equal_username", address)
            return None
        secret = password or ""
        digest = hashlib.sha256(secret.encode()).digest()
        lock = self._checking.setdefault(username, asyncio.Lock())
        try:
            async with lock:  # one check per id at a time: a failure counts before the next guess
                cached = self._verified.get(username)
                if cached is not None and cached == (digest, principal.secret_hash):
                    return principal
                wait = self.throttle.remaining(username, address)
                if wait > 0:
                    self.counters.logins_throttled += 1
                    self._refuse(username, client_id, "backing_off", address, retry_in_s=wait)
                    return None
                if is_fast(principal.secret_hash):
                    ok = verify_secret(secret, principal.secret_hash)
                else:
                    loop = asyncio.get_running_loop()
                    ok = await loop.run_in_executor(self._pool, verify_secret, secret, principal.secret_hash)
                if not ok:
                    self.throttle.failed(username, address)
                    self._refuse(username, client_id, "bad_secret", address)
                    return None
                self.throttle.succeeded(username)
                self._verified[username] = (digest, principal.secret_hash)
                return principal
        finally:
            if not lock.locked() and self._checking.get(username) is lock:
                del self._checking[username]

    def retry_in(self, username: str | None, address: str | None) -> float:
        """Seconds the id or address of a refused login still backs off (0 when it does not)."""
        return self.throttle.remaining(username or "", address)

    def _refuse(self, username: str, client_id: str | None, reason: str, address: str | None,
                retry_in_s: float = 0.0) -> None:
        self.failed_logins += 1
        self.counters.logins_refused += 1
        # never log the password; one line per id per interval, then a count
        self.notes.event("login_refused", username, "login refused reason=%s username=%s client_id=%s peer=%s%s",
                         reason, clip(username), clip(client_id), address,
                         f" retry_in_s={retry_in_s:.1f}" if retry_in_s else "")

    async def authenticate(self, session: Session) -> bool:
        """amqtt hook: True when the session's credentials are good; tags the session with its role."""
        if session.username is None and self.allow_anonymous:
            session.fleet_role = None  # type: ignore[attr-defined]
            return True
        principal = await self.check_login(session.username, session.password, session.client_id,
                                           getattr(session, "remote_address", None))
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
            self.counters.denials += 1
            name = session.username or str(session.client_id)
            self.notes.event(f"denied_{action.value}", name, "denied action=%s username=%s topic=%s",
                             action.value, clip(session.username), clip(topic))
        return allowed
