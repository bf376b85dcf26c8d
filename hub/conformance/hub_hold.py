"""The checker's lease on a running hub's watermarks for the device under test.

With a hub running, the scenarios of section 5 need the hub's watermarks out of the way: the
checker asks the hub to hold them (:class:`protocol.ops.HoldRequest`), renews the lease from a
thread of its own, and releases it at the end. The hub keeps storing what the device sends; on
release it publishes the device's current watermark at once. A checker that dies simply stops
renewing: the lease runs out and the hub releases the device by itself.
"""

from __future__ import annotations

import logging
import threading

from hub.errors import HubError
from hub.ops_client import HubUnreachable, OpsClient

log = logging.getLogger("fleet.device_check")


class HubHold:
    """A held lease; :meth:`acquire` returns None when no hub grants it (none runs, or an older one)."""

    def __init__(self, ops: OpsClient, device_id: str, lease_s: float) -> None:
        self.ops = ops
        self.device_id = device_id
        self.lease_s = lease_s
        self.renewal_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, broker: str, username: str, password: str, cafile: str | None, device_id: str,
                lease_s: float, answer_s: float) -> tuple[HubHold | None, str]:
        """(the hold, "") when a hub granted it, else (None, why not)."""
        ops = OpsClient(broker, username, password, cafile, connect_timeout=answer_s)
        try:
            ops.connect()
            resp = ops.hold_watermarks(device_id, lease_s, answer_timeout=answer_s)
        except HubUnreachable as exc:
            ops.close()
            return None, str(exc)
        if not resp.ok:
            ops.close()
            return None, f"the hub refused to hold the watermarks: {resp.error}"
        hold = cls(ops, device_id, lease_s)
        hold._thread = threading.Thread(target=hold._renew, name="device-check-hold", daemon=True)
        hold._thread.start()
        return hold, ""

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.ops.hold_watermarks(self.device_id, self.lease_s, answer_timeout=self.lease_s / 3).ok:
                    self.renewal_failures += 1
            except (HubError, OSError) as exc:  # the next renewal may still make it within the lease
                self.renewal_failures += 1
                log.warning("watermark hold not renewed device_id=%s error=%s", self.device_id, exc)

    def release(self) -> bool:
        """Stop renewing and release; True when the hub confirmed (it then published the current watermark)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.lease_s)
        try:
            return self.ops.release_watermarks(self.device_id).ok
        except HubError:
            return False  # the lease runs out by itself
        finally:
            self.ops.close()
