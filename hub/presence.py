"""Device presence: online/offline from birth and will messages, plus a staleness timeout.

A device is online after its birth (``d/<id>/s`` state online) and offline after its will
(state offline). Because a broker may never fire a will (AMQTT_NOTES.md #2), a device that sent
nothing for ``max(staleness_min_s, interval_s x staleness_factor)`` is also marked offline
(reason ``stale``); its next message brings it back online (reason ``message``). A will is
final until the next birth. Every transition is stored in ``presence_events``.

The tracker keeps the state in memory (one writer thread owns it) and writes through the
store in the writer's current transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hub.storage import DeviceRow
from hub.store import HubStore
from protocol.models import Status, StatusState

log = logging.getLogger("fleet.hub.presence")

ONLINE = StatusState.ONLINE.value
OFFLINE = StatusState.OFFLINE.value


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    device_id: str
    state: str
    reason: str
    boot: int | None
    ts: float


class PresenceTracker:
    """Online/offline state of every device the hub has heard of."""

    def __init__(self, store: HubStore, *, staleness_factor: float = 2.5, staleness_min_s: float = 5.0,
                 default_interval_s: int = 60) -> None:
        self.store = store
        self.factor = staleness_factor
        self.min_s = staleness_min_s
        self.default_interval_s = default_interval_s
        self.devices: dict[str, DeviceRow] = {d.device_id: d for d in store.load_devices()}
        self._seen: dict[str, float] = {}

    def window(self, device: DeviceRow) -> float:
        """Seconds of silence after which ``device`` counts as offline."""
        return max(self.min_s, (device.interval_s or self.default_interval_s) * self.factor)

    def on_status(self, device_id: str, status: Status, now: float) -> PresenceEvent | None:
        """Apply a birth or will; returns the transition, if any."""
        dev = self.devices.get(device_id)
        state = StatusState(status.state).value
        if dev is not None and dev.boot is not None and status.boot < dev.boot:
            log.info("status ignored reason=older_boot device_id=%s boot=%s current_boot=%s",
                     device_id, status.boot, dev.boot)
            return None
        if dev is None:
            dev = DeviceRow(device_id, OFFLINE, "new", now)
            self.devices[device_id] = dev
        if state == ONLINE:
            dev.fw, dev.boot, dev.enc, dev.interval_s = status.fw, status.boot, status.enc, status.interval_s
            dev.last_seen = now
        else:
            dev.boot = status.boot
        event = self._transition(dev, state, "birth" if state == ONLINE else "will", now)
        self.store.save_device(dev)
        return event

    def on_message(self, device_id: str, now: float) -> PresenceEvent | None:
        """Any message from ``device_id``: moves last_seen; revives a device that was only stale."""
        self._seen[device_id] = now
        dev = self.devices.get(device_id)
        if dev is None:
            dev = DeviceRow(device_id, ONLINE, "message", now, last_seen=now)
            self.devices[device_id] = dev
            self.store.save_device(dev)
            self.store.insert_presence_event(device_id, ONLINE, "message", None, now)
            return PresenceEvent(device_id, ONLINE, "message", None, now)
        dev.last_seen = now
        if dev.state == OFFLINE and dev.state_reason in ("stale", "new"):
            event = self._transition(dev, ONLINE, "message", now)
            self.store.save_device(dev)
            return event
        return None

    def flush(self) -> None:
        """Write the last_seen of the devices heard from in this batch."""
        if self._seen:
            self.store.touch_devices(self._seen)
            self._seen = {}

    def check_stale(self, now: float) -> list[PresenceEvent]:
        """Mark offline every online device silent for longer than its window (own transaction)."""
        stale = [d for d in self.devices.values()
                 if d.state == ONLINE and now - (d.last_seen or d.state_since) > self.window(d)]
        events: list[PresenceEvent] = []
        if not stale:
            return events
        with self.store.transaction():
            for dev in stale:
                event = self._transition(dev, OFFLINE, "stale", now)
                self.store.save_device(dev)
                if event:
                    events.append(event)
                log.info("device offline reason=stale device_id=%s last_seen=%.3f window_s=%.1f",
                         dev.device_id, dev.last_seen or 0.0, self.window(dev))
        return events

    def _transition(self, dev: DeviceRow, state: str, reason: str, now: float) -> PresenceEvent | None:
        changed = dev.state != state
        dev.state_reason = reason
        if not changed:
            return None
        dev.state = state
        dev.state_since = now
        self.store.insert_presence_event(dev.device_id, state, reason, dev.boot, now)
        return PresenceEvent(dev.device_id, state, reason, dev.boot, now)
