"""The ``devices`` (presence) and ``presence_events`` tables."""

from __future__ import annotations

from dataclasses import dataclass

from hub.storage.connection import Connection


@dataclass(slots=True)
class DeviceRow:
    """Presence of one device as the hub keeps it."""

    device_id: str
    state: str
    state_reason: str
    state_since: float
    last_seen: float | None = None
    fw: str | None = None
    boot: int | None = None
    enc: str | None = None
    interval_s: int | None = None
    incarnation: int = 0
    """Resets so far: births whose boot went back (firmware_protocol.md 4.1)."""
    boot_ts: int | None = None
    """Power-up time of the current boot (ms since the epoch) from the birth, for uptime stamps."""
    sleep_s: int = 0
    """The wake period the device declared in its birth (firmware_protocol.md 4.5); 0: it never sleeps."""
    flaps: int = 0
    """Times the device came back within the flap window of going offline (or before a will took effect)."""


@dataclass(frozen=True, slots=True)
class DeviceLinkRow:
    """What the command bridge needs of a device's presence."""

    device_id: str
    state: str
    enc: str | None


class PresenceStore:
    """Presence rows on one connection (the writer's, or the command bridge's for reading)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def load_devices(self) -> list[DeviceRow]:
        """Every device the hub has seen, for the presence tracker's start."""
        return [DeviceRow(*r) for r in self.conn.execute(
            "SELECT device_id, state, state_reason, state_since, last_seen, fw, boot, enc, interval_s, incarnation,"
            " boot_ts, sleep_s, flaps FROM devices"
        )]

    def save_device(self, row: DeviceRow) -> None:
        """Insert or replace one device's presence."""
        self.conn.execute(
            "INSERT OR REPLACE INTO devices (device_id, state, state_reason, state_since, last_seen, fw, boot, enc,"
            " interval_s, incarnation, boot_ts, sleep_s, flaps) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.device_id, row.state, row.state_reason, row.state_since, row.last_seen, row.fw, row.boot, row.enc,
             row.interval_s, row.incarnation, row.boot_ts, row.sleep_s, row.flaps),
        )

    def insert_reset(self, device_id: str, incarnation: int, old_boot: int | None, new_boot: int, ts: float) -> None:
        """Record a reset: a birth whose boot went back, starting ``incarnation``."""
        self.conn.execute(
            "INSERT INTO device_resets (device_id, incarnation, old_boot, new_boot, ts) VALUES (?, ?, ?, ?, ?)",
            (device_id, incarnation, old_boot, new_boot, ts),
        )

    def touch_devices(self, last_seen: dict[str, float]) -> None:
        """Move ``last_seen`` forward for the devices of a batch."""
        self.conn.executemany(
            "UPDATE devices SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE device_id = ?",
            [(ts, dev) for dev, ts in last_seen.items()],
        )

    def insert_presence_event(self, device_id: str, state: str, reason: str, boot: int | None, ts: float) -> None:
        """Record one online/offline transition."""
        self.conn.execute(
            "INSERT INTO presence_events (device_id, state, reason, boot, ts) VALUES (?, ?, ?, ?, ?)",
            (device_id, state, reason, boot, ts),
        )

    def links(self, device_ids: list[str] | None = None) -> list[DeviceLinkRow]:
        """State and encoding of the given devices (of every device when None)."""
        if device_ids is None:
            return [DeviceLinkRow(*r) for r in self.conn.execute("SELECT device_id, state, enc FROM devices")]
        rows: list[DeviceLinkRow] = []
        for i in range(0, len(device_ids), 500):  # SQLite's limit on bound variables
            chunk = device_ids[i:i + 500]
            rows += [DeviceLinkRow(*r) for r in self.conn.execute(
                f"SELECT device_id, state, enc FROM devices WHERE device_id IN ({','.join('?' * len(chunk))})", chunk)]
        return rows

    def stored_encoding(self, device_id: str) -> str | None:
        """The encoding the device asked for in its last birth, as the hub stored it."""
        row = self.conn.execute("SELECT enc FROM devices WHERE device_id = ?", [device_id]).fetchone()
        return row[0] if row and row[0] else None
