"""Counters of the embedded broker's guards (quotas, refused logins, protocol violations, denials).

Owned and written by the broker's event loop only; other threads read :meth:`BrokerCounters.snapshot`,
a plain dict copied on the loop's side of the call (see ``BackgroundBroker.call``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class BrokerCounters:
    """How often each guard of the embedded broker acted since start."""

    logins: int = 0
    """Logins accepted (CONNACK 0)."""
    connections: int = 0
    """Connections logged in right now (a gauge)."""
    quota_waits: int = 0
    """Packets read only after the sender was held back by its quota."""
    quota_held_s: float = 0.0
    """Total seconds connections were held back (not read) by their quotas."""
    quota_disconnects: int = 0
    """Connections closed for being held back longer than the hard limit."""
    inflight_disconnects: int = 0
    """Connections closed for too many QoS 2 messages awaiting PUBREL."""
    protocol_violations: int = 0
    """Connections closed at once for a malformed or forbidden packet."""
    unsupported_protocol: int = 0
    """CONNECTs of another protocol level, answered with CONNACK 0x01."""
    retain_refused: int = 0
    """Retained PUBLISHes on device topics other than ``s``/``w``: delivered, not stored."""
    denials: int = 0
    """Publishes and subscriptions refused by the topic rules."""
    logins_refused: int = 0
    """Logins refused, for any reason (unknown id, bad secret, backing off)."""
    logins_throttled: int = 0
    """Of those, refused without a check because the id or address was backing off."""
    deliveries_dropped: int = 0
    """Messages not queued because a subscriber already had ``max_queued_messages`` pending."""

    def snapshot(self) -> dict[str, float]:
        """A copy of every counter, for metrics and tests."""
        return asdict(self)
