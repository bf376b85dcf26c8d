"""Watermark holds: devices whose watermarks the hub withholds while ``fleet device-check`` runs.

The command bridge grants and releases holds (operator requests, :class:`protocol.ops.HoldRequest`);
the ingest writer asks :meth:`WatermarkHolds.held` before publishing a watermark and, between
batches, publishes the current watermark of every device :meth:`WatermarkHolds.due` returns
(released, or whose lease ran out because the checker died). Two threads: one lock.
"""

from __future__ import annotations

import threading
import time

from protocol.ops import CHECKER_COMMAND_PREFIX

CHECKER_GRACE_S = 60.0
"""After a hold ends, replies to the checker's commands still count as the checker's this long (late replies)."""


class WatermarkHolds:
    """Leases by device id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._due: set[str] = set()
        self._checker_until: dict[str, float] = {}

    def hold(self, device_id: str, lease_s: float, now: float | None = None) -> float:
        """Hold (or renew the hold of) ``device_id`` for ``lease_s``; returns the lease's end."""
        now = time.time() if now is None else now
        with self._lock:
            until = self._until[device_id] = now + lease_s
            self._due.discard(device_id)
            self._checker_until[device_id] = until + CHECKER_GRACE_S
            return until

    def release(self, device_id: str, now: float | None = None) -> bool:
        """End the hold of ``device_id``; False when it held nothing. Its watermark goes out on the next :meth:`due`."""
        now = time.time() if now is None else now
        with self._lock:
            if self._until.pop(device_id, None) is None:
                return False
            self._due.add(device_id)
            self._checker_until[device_id] = now + CHECKER_GRACE_S
            return True

    def held(self, device_id: str, now: float | None = None) -> bool:
        """Whether the hub must not publish a watermark for ``device_id`` now."""
        if not self._until:  # the hot path: nobody is being checked
            return False
        now = time.time() if now is None else now
        with self._lock:
            until = self._until.get(device_id)
            return until is not None and now < until

    def due(self, now: float | None = None) -> list[str]:
        """Devices whose hold ended (released, or the lease ran out) since the last call: publish their watermark."""
        if not self._until and not self._due:
            return []
        now = time.time() if now is None else now
        with self._lock:
            for device_id in [d for d, until in self._until.items() if now >= until]:
                del self._until[device_id]
                self._due.add(device_id)
            due, self._due = sorted(self._due), set()
            return due

    def checker_reply(self, device_id: str, command_id: str, now: float | None = None) -> bool:
        """Whether a reply to unknown ``command_id`` is to a command the checker published (held device, its prefix)."""
        if not command_id.startswith(CHECKER_COMMAND_PREFIX):
            return False
        now = time.time() if now is None else now
        with self._lock:
            return now < self._checker_until.get(device_id, 0.0)
