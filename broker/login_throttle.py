"""Back-off for failed logins, per device id and per source address.

965 wrong-password CONNECTs in 30 s on one device id kept the broker's two hash threads busy
(about 190 % CPU) and a first-time login of an honest device took 1.46 s. With this throttle an
id (or an address) that failed ``free_failures`` times backs off: 1 s, then doubling up to
``max_s``. A login during a back-off is refused without computing a hash, so guessing costs the
broker almost nothing and the hash threads stay free for honest devices. A login whose password
was verified before (the cached digest in :class:`~broker.access.AccessControl`) passes even
during a back-off: it proves the secret without a hash, so an attacker guessing a device's
secret cannot lock that device out once it has logged in.

Only failures that cost a hash count against an address (refusals during a back-off do not),
and successes never reset an address: a guesser that also owns one valid credential cannot
reset its own address. Failures are forgotten ``forget_s`` after the last one. Pure state,
driven by an explicit clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    failures: int
    last: float
    until: float = 0.0


class BackOff:
    """Failure counts and back-off deadlines for one kind of key (device id, or address)."""

    def __init__(self, free_failures: int, max_s: float, base_s: float = 1.0, forget_s: float = 600.0,
                 max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.free_failures = free_failures
        self.max_s = max_s
        self.base_s = base_s
        self.forget_s = forget_s
        self.max_keys = max_keys
        self.clock = clock
        self._records: dict[str, _Record] = {}

    def remaining(self, key: str) -> float:
        """Seconds ``key`` must still wait before its next login is checked (0: check it now)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        now = self.clock()
        if now - record.last > self.forget_s:
            del self._records[key]
            return 0.0
        return max(0.0, record.until - now)

    def failed(self, key: str) -> float:
        """Record a failed, checked login of ``key``; returns the back-off it now has."""
        now = self.clock()
        record = self._records.get(key)
        if record is None or now - record.last > self.forget_s:
            if len(self._records) >= self.max_keys:
                self._prune(now)
            record = self._records[key] = _Record(0, now)
        record.failures += 1
        record.last = now
        over = record.failures - self.free_failures
        if over >= 0:
            record.until = now + min(self.max_s, self.base_s * 2 ** min(over, 30))
        return max(0.0, record.until - now)

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key`` (for device ids only; see the module docstring)."""
        self._records.pop(key, None)

    def _prune(self, now: float) -> None:
        stale = [k for k, r in self._records.items() if now - r.last > self.forget_s or r.until <= now]
        for key in stale or list(self._records)[: len(self._records) // 2]:
            del self._records[key]


class LoginThrottle:
    """The two back-offs the broker applies to logins: per device id and per source address."""

    def __init__(self, id_free_failures: int = 3, address_free_failures: int = 20, max_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ids = BackOff(id_free_failures, max_s, clock=clock)
        self.addresses = BackOff(address_free_failures, max_s, clock=clock)

    def remaining(self, username: str, address: str | None) -> float:
        """The longer back-off of ``username`` and ``address`` (0: the login may be checked)."""
        by_address = self.addresses.remaining(address) if address else 0.0
        return max(self.ids.remaining(username), by_address)

    def failed(self, username: str, address: str | None) -> None:
        """A checked login of ``username`` from ``address`` failed."""
        self.ids.failed(username)
        if address:
            self.addresses.failed(address)

    def succeeded(self, username: str) -> None:
        """A checked login of ``username`` passed."""
        self.ids.succeeded(username)
