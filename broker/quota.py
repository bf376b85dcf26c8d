"""Per-device publish quotas: token buckets that hold a fast device back on its own connection.

Before this module one device writing unpaced QoS 1 stalled every other device's watermark for
minutes: amqtt reads as fast as the socket delivers, acknowledges on enqueue, and queues without
bound in front of the hub's one session. Here every PUBLISH, SUBSCRIBE, UNSUBSCRIBE and PINGREQ a
client sends is charged to two token buckets (messages and bytes, each a sustained rate and a
burst). When a bucket runs dry the connection's reader (:mod:`broker.reader`) simply waits before
reading the next packet: the socket is not read, its PUBACKs come later, TCP pushes back on
the sender, and no other connection notices. A client held back without a break for longer
than ``hard_limit_s`` is disconnected.

Buckets belong to the principal (username), not to the connection, so reconnecting does not
refill them. Limits come from :class:`Quota`: the broker's defaults per role, overridden per
role or per principal in the registry (``Registry.set_quota``). A rate of 0 means unlimited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class Quota(BaseModel):
    """The publish quota of one principal. Rates of 0 mean unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    msgs_per_s: float = Field(20.0, ge=0)
    """Sustained packets per second (PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PINGREQ)."""
    burst_msgs: float = Field(200.0, ge=1)
    """Packets a quiet device may send at once (a re-send of its buffer after an outage)."""
    bytes_per_s: float = Field(32 * 1024, ge=0)
    """Sustained bytes per second (whole packets)."""
    burst_bytes: float = Field(256 * 1024, ge=1024)
    """Bytes a quiet device may send at once; at least one packet of ``max_packet_bytes``."""
    hard_limit_s: float = Field(20.0, gt=0)
    """A client held back without a break for this long is disconnected."""

    @property
    def unlimited(self) -> bool:
        return self.msgs_per_s == 0 and self.bytes_per_s == 0

    def merged(self, override: dict[str, float | None] | None) -> Quota:
        """This quota with the non-null fields of a registry row applied."""
        if not override:
            return self
        changes = {k: v for k, v in override.items() if v is not None}
        return self.model_copy(update=changes) if changes else self


UNLIMITED = Quota(msgs_per_s=0, bytes_per_s=0)
"""The default for the hub and operators (trusted services that speak for the whole fleet)."""


@dataclass(slots=True)
class TokenBucket:
    """Classic token bucket that may go into debt: ``charge`` returns how long to wait."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def charge(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens; the seconds until the bucket is out of debt again (0: go on)."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def rested(self) -> bool:
        """True when at least half the burst is available (the sender paused long enough)."""
        return self.rate <= 0 or self.tokens >= self.burst / 2


class ClientQuota:
    """The buckets of one principal, shared by all its connections (see the module docstring)."""

    def __init__(self, quota: Quota, clock: Callable[[], float] = time.monotonic) -> None:
        now = clock()
        self.quota = quota
        self.clock = clock
        self.msgs = TokenBucket(quota.msgs_per_s, quota.burst_msgs, quota.burst_msgs, now)
        self.bytes = TokenBucket(quota.bytes_per_s, quota.burst_bytes, quota.burst_bytes, now)
        self.held_since: float | None = None
        self.held_s = 0.0
        self.last_used = now

    def charge(self, nbytes: int) -> float:
        """Charge one packet of ``nbytes``; returns the seconds the reader must wait first."""
        now = self.clock()
        self.last_used = now
        wait = max(self.msgs.charge(1, now), self.bytes.charge(nbytes, now))
        if wait > 0:
            self.held_s += wait
            if self.held_since is None:
                self.held_since = now
        elif self.msgs.rested() and self.bytes.rested():
            # a packet that merely slipped through between two waits (a late wake-up refills a
            # little) does not end the hold; a sender that paused until half its burst is back does
            self.held_since = None
        return wait

    def over_hard_limit(self) -> bool:
        """True when the client has been held back without a break for longer than the hard limit."""
        return self.held_since is not None and self.clock() - self.held_since > self.quota.hard_limit_s


class QuotaBook:
    """The :class:`ClientQuota` of every principal that logged in, with limits looked up at login.

    ``defaults`` maps a role (None: anonymous demo clients) to its quota; ``overrides(id, role)``
    returns the registry's fields for that principal (``Registry.quota_override``).
    """

    def __init__(self, defaults: dict[object, Quota],
                 overrides: Callable[[str, object], dict[str, float | None]] | None = None,
                 clock: Callable[[], float] = time.monotonic, max_idle_s: float = 3600.0) -> None:
        self.defaults = defaults
        self.overrides = overrides
        self.clock = clock
        self.max_idle_s = max_idle_s
        self._clients: dict[str, ClientQuota] = {}

    def quota_of(self, principal: str, role: object) -> Quota:
        """The limits for ``principal`` in ``role``: the role's default with registry overrides applied."""
        base = self.defaults.get(role, self.defaults[None])
        if self.overrides is None or role is None:
            return base
        return base.merged(self.overrides(principal, role))

    def for_login(self, principal: str, role: object) -> ClientQuota | None:
        """The buckets of ``principal`` (kept across reconnects), or None when it is unlimited."""
        quota = self.quota_of(principal, role)
        if quota.unlimited:
            self._clients.pop(principal, None)
            return None
        client = self._clients.get(principal)
        if client is None or client.quota != quota:
            self._forget_idle()
            client = self._clients[principal] = ClientQuota(quota, self.clock)
        return client

    def _forget_idle(self) -> None:
        if len(self._clients) < 10_000:
            return
        now = self.clock()
        for name in [n for n, c in self._clients.items() if now - c.last_used > self.max_idle_s and c.held_since is None]:
            del self._clients[name]
