"""Device presence: online/offline from birth and will messages, plus a staleness timeout.

A device is online after its birth (``d/<id>/s`` state online) and offline after its will
(state offline). A birth whose ``boot`` is lower than the one the hub knows is a **reset**
(firmware_protocol.md 4.1): the device starts a new incarnation, recorded in ``device_resets``,
and the birth is applied like any other (reason ``reset``). A will of another boot than the
current one is stale (the broker fired it after the device had already come back, or it is the
old board's after a reset) and changes nothing. Because a broker may never fire a will
(AMQTT_NOTES.md #2), a device that sent
nothing for ``max(staleness_min_s, interval_s x staleness_factor)`` is also marked offline
(reason ``stale``); its next message brings it back online (reason ``message``). A will is
final until the next birth. Every transition is stored in ``presence_events``.

Hysteresis and flaps: a will takes effect only ``offline_hysteresis_s`` after it arrived, and a
birth of the same device before then cancels it; such a quick reconnect, like a device back
online within ``flap_window_s`` of going offline, counts one **flap** (``devices.flaps``, the
metric ``fleet_presence_flaps_total``) instead of an offline/online pair in the history.

Sleepy devices (firmware_protocol.md 4.5): a birth with ``sleep_s`` > 0 declares that the device
sleeps between wakes, waking at least every ``sleep_s`` seconds. Going silent, its will, or its
offline status then make it ``sleeping`` (not offline) until its next wake is due; it is marked
offline (reason ``missed_wake``) only when silent for ``sleep_s x (1 + sleep_grace)`` (and at
least ``staleness_min_s`` more than ``sleep_s``). Any message of the next wake brings it back
online (reason ``wake``).

The tracker keeps the state in memory (one writer thread owns it) and writes through the
store in the writer's current transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hub.storage import DeviceRow
from hub.store import HubStore
from protocol.models import Status, StatusState

def wake_window(sleep_s: float, sleep_grace: float, staleness_min_s: float) -> float:
    """Seconds of silence after its last message at which a device that declares ``sleep_s`` has missed its wake
    (firmware_protocol.md 4.5; ``device-check`` judges a wake by the same window)."""
    return max(sleep_s * (1.0 + sleep_grace), sleep_s + staleness_min_s)


log = logging.getLogger("fleet.hub.presence")

ONLINE = StatusState.ONLINE.value
OFFLINE = StatusState.OFFLINE.value
SLEEPING = "sleeping"
"""A hub-side state (devices never send it): a sleepy device between two wakes."""
REVIVABLE = ("stale", "new", "missed_wake")
"""Offline reasons that any message undoes (a will or an offline status waits for a birth)."""


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    device_id: str
    state: str
    reason: str
    boot: int | None
    ts: float


@dataclass(frozen=True, slots=True)
class BirthOutcome:
    """What a status message changed: the transition (if any), and whether it was a reset."""

    event: PresenceEvent | None
    reset: bool = False
    boot_ts_changed: bool = False


class PresenceTracker:
    """Online/offline state of every device the hub has heard of."""

    def __init__(self, store: HubStore, *, staleness_factor: float = 2.5, staleness_min_s: float = 5.0,
                 default_interval_s: int = 60, offline_hysteresis_s: float = 0.0, flap_window_s: float = 60.0,
                 sleep_grace: float = 0.25) -> None:
        self.store = store
        self.factor = staleness_factor
        self.min_s = staleness_min_s
        self.default_interval_s = default_interval_s
        self.hysteresis_s = offline_hysteresis_s
        self.flap_window_s = flap_window_s
        self.sleep_grace = sleep_grace
        self.devices: dict[str, DeviceRow] = {d.device_id: d for d in store.load_devices()}
        self._seen: dict[str, float] = {}
        self._wills: dict[str, tuple[float, int]] = {}
        """Wills waiting for the hysteresis to pass: device id -> (when the will arrived, its boot)."""
        self.flaps = 0
        """Flaps since the last :meth:`take_flaps` (the writer adds them to its stats)."""

    def wake_window(self, device: DeviceRow) -> float:
        """Seconds of silence after which a sleepy device has missed its wake."""
        return wake_window(device.sleep_s, self.sleep_grace, self.min_s)

    def state_counts(self) -> dict[str, int]:
        """Devices per presence state (read by the metrics thread: a copy of the values first)."""
        counts: dict[str, int] = {}
        for dev in list(self.devices.values()):
            counts[dev.state] = counts.get(dev.state, 0) + 1
        return counts

    def take_flaps(self) -> int:
        """Flaps counted since the last call."""
        n, self.flaps = self.flaps, 0
        return n

    def _flap(self, dev: DeviceRow) -> None:
        dev.flaps += 1
        self.flaps += 1

    def window(self, device: DeviceRow) -> float:
        """Seconds of silence after which ``device`` counts as offline."""
        return max(self.min_s, (device.interval_s or self.default_interval_s) * self.factor)

    def on_status(self, device_id: str, status: Status, now: float) -> BirthOutcome:
        """Apply a birth or will: the transition, and whether the birth was a reset."""
        dev = self.devices.get(device_id)
        state = StatusState(status.state).value
        known = dev is not None and dev.boot is not None
        older = known and status.boot < dev.boot  # type: ignore[union-attr,operator]
        if known and state == OFFLINE and status.boot != dev.boot:  # type: ignore[union-attr]
            # a will speaks for the boot of the connection that died, and every boot births first: a will of
            # another boot is stale (e.g. the old board's, after a reset to a lower boot)
            log.debug("will ignored reason=other_boot device_id=%s boot=%s current_boot=%s",
                      device_id, status.boot, dev.boot if dev else None)
            return BirthOutcome(None)
        if dev is None:
            dev = DeviceRow(device_id, OFFLINE, "new", now)
            self.devices[device_id] = dev
        reset = older
        if reset:
            old_boot = dev.boot
            dev.incarnation += 1
            self.store.insert_reset(device_id, dev.incarnation, old_boot, status.boot, now)
            log.warning("device reset device_id=%s old_boot=%s new_boot=%s incarnation=%s (its boot counter went "
                        "back: flash wiped or board replaced; data is kept apart per incarnation)",
                        device_id, old_boot, status.boot, dev.incarnation)
        boot_ts_changed = False
        new_boot = dev.boot != status.boot
        if state == ONLINE:
            boot_ts = status.boot_ts or (None if new_boot or reset else dev.boot_ts)
            boot_ts_changed = boot_ts is not None and boot_ts != dev.boot_ts
            dev.fw, dev.boot, dev.enc, dev.interval_s = status.fw, status.boot, status.enc, status.interval_s
            dev.boot_ts = boot_ts
            dev.sleep_s = status.sleep_s
            dev.last_seen = now
            if self._wills.pop(device_id, None) is not None:
                self._flap(dev)  # back before its will took effect: one flap, no offline/online pair
            elif dev.state == OFFLINE and dev.state_reason != "new" and now - dev.state_since <= self.flap_window_s:
                self._flap(dev)
        else:
            dev.boot = status.boot
            if dev.sleep_s > 0:
                # a sleepy device's link goes down at every sleep: it is gone only when it misses its wake
                event = self._transition(dev, SLEEPING, "will", now)
                self.store.save_device(dev)
                return BirthOutcome(event, reset, False)
            if self.hysteresis_s > 0 and not reset:
                self._wills.setdefault(device_id, (now, status.boot))  # takes effect in apply_due unless a birth comes first
                self.store.save_device(dev)
                return BirthOutcome(None, reset, False)
        reason = "reset" if reset else "will" if state != ONLINE else "wake" if dev.state == SLEEPING else "birth"
        event = self._transition(dev, state, reason, now)
        if event is None and state == ONLINE and (reset or new_boot):
            # already online, yet a birth of another boot: the device restarted and its will never came (the
            # broker died with it, e.g. a hard-killed `fleet up`); the history must show the new boot, not end
            # at the old one, and the command side must hear of it (a new incarnation, or lost commands)
            dev.state_since = now
            self.store.insert_presence_event(device_id, state, reason, dev.boot, now)
            event = PresenceEvent(device_id, state, reason, dev.boot, now)
        self.store.save_device(dev)
        return BirthOutcome(event, reset, boot_ts_changed)

    def incarnation(self, device_id: str) -> int:
        """The device's current incarnation (0 for a device never reset or never seen)."""
        dev = self.devices.get(device_id)
        return dev.incarnation if dev is not None else 0

    def current_boot(self, device_id: str) -> int | None:
        """The boot of the device's latest status, if any."""
        dev = self.devices.get(device_id)
        return dev.boot if dev is not None else None

    def boot_ts(self, device_id: str, boot: int) -> int | None:
        """Power-up time (ms) of ``boot`` when it is the device's current boot and the device told it."""
        dev = self.devices.get(device_id)
        return dev.boot_ts if dev is not None and dev.boot == boot else None

    def encoding(self, device_id: str) -> str:
        """The form the device asked for in its latest birth (JSON until one is seen)."""
        dev = self.devices.get(device_id)
        return (dev.enc or "json") if dev is not None else "json"

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
        if dev.state == SLEEPING:
            event = self._transition(dev, ONLINE, "wake", now)
            self.store.save_device(dev)
            return event
        if dev.state == OFFLINE and dev.state_reason in REVIVABLE:
            if dev.state_reason != "new" and now - dev.state_since <= self.flap_window_s:
                self._flap(dev)
            event = self._transition(dev, ONLINE, "message", now)
            self.store.save_device(dev)
            return event
        return None

    def flush(self) -> None:
        """Write the last_seen of the devices heard from in this batch."""
        if self._seen:
            self.store.touch_devices(self._seen)
            self._seen = {}

    def _due(self, now: float) -> tuple[list[tuple[DeviceRow, float, int]], list[DeviceRow], list[DeviceRow]]:
        wills = [(self.devices[d], ts, boot) for d, (ts, boot) in self._wills.items()
                 if now - ts >= self.hysteresis_s and d in self.devices]
        stale = [d for d in self.devices.values()
                 if d.state == ONLINE and now - (d.last_seen or d.state_since) > self.window(d)]
        missed = [d for d in self.devices.values()
                  if d.state == SLEEPING and now - (d.last_seen or d.state_since) > self.wake_window(d)]
        return wills, stale, missed

    def due(self, now: float) -> bool:
        """Whether :meth:`apply_due` has anything to do at ``now`` (no database access)."""
        return any(self._due(now))

    def apply_due(self, now: float) -> list[PresenceEvent]:
        """Due wills take effect; silent online devices go offline (sleepy ones: sleeping); sleeping devices
        that missed their wake go offline. Inside the caller's write transaction (``BatchWriter.check_stale``)."""
        wills, stale, missed = self._due(now)
        events: list[PresenceEvent] = []
        for dev, ts, boot in wills:
            del self._wills[dev.device_id]
            if dev.boot != boot or (dev.last_seen or 0.0) > ts:
                # back before the will took effect, through a birth or message that another writer stored
                # (a worker group: the will and the birth can go to different workers; their state is
                # this tracker's after the writer's reload): a flap, not an offline/online pair
                self._flap(dev)
                self.store.save_device(dev)
                continue
            if dev.state != OFFLINE or dev.state_reason != "will":
                self._save(dev, OFFLINE, "will", ts, events)
        for dev in stale:
            if dev.sleep_s > 0:
                self._save(dev, SLEEPING, "asleep", now, events)
                continue
            self._save(dev, OFFLINE, "stale", now, events)
            log.info("device offline reason=stale device_id=%s last_seen=%.3f window_s=%.1f",
                     dev.device_id, dev.last_seen or 0.0, self.window(dev))
        for dev in missed:
            self._save(dev, OFFLINE, "missed_wake", now, events)
            log.info("device offline reason=missed_wake device_id=%s last_seen=%.3f sleep_s=%s",
                     dev.device_id, dev.last_seen or 0.0, dev.sleep_s)
        return events

    def _save(self, dev: DeviceRow, state: str, reason: str, now: float, events: list[PresenceEvent]) -> None:
        event = self._transition(dev, state, reason, now)
        self.store.save_device(dev)
        if event:
            events.append(event)

    def _transition(self, dev: DeviceRow, state: str, reason: str, now: float) -> PresenceEvent | None:
        changed = dev.state != state
        dev.state_reason = reason
        if not changed:
            return None
        dev.state = state
        dev.state_since = now
        self.store.insert_presence_event(dev.device_id, state, reason, dev.boot, now)
        return PresenceEvent(dev.device_id, state, reason, dev.boot, now)
