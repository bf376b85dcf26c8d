"""Device configuration (desired and reported, per key), device descriptions, and readings outside a
declared range (schema version 7; firmware_protocol.md section 13).

    config_devices   one row per configured or described device: the desired ``version`` (bumped by every
                     change), the version the device last reported, the version last sent, the description
                     hash and config version of its latest birth
    config_keys      one row per (device, key): desired value and the version that set it; reported value and
                     the version that applied it; the device's refusal (reason, version)
    descriptions     description bodies by hash (the hub hashes the bytes it received)
    range_flags      per (device, metric): readings outside the device's declared range (counted, never dropped)

Values are stored as JSON text (an argument value: text, bool, integer or float).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hub.storage.connection import Connection, transaction

@dataclass(slots=True)
class KeyRow:
    """One configuration key of one device."""

    key: str
    desired: Any = None
    set_version: int = 0
    set_at: float | None = None
    reported: Any = None
    reported_version: int = 0
    applied_at: float | None = None
    refused_reason: str | None = None
    refused_version: int = 0
    has_desired: bool = False
    has_reported: bool = False


@dataclass(slots=True)
class DeviceConfigRow:
    """What the hub holds of one device's configuration."""

    device_id: str
    version: int = 0
    reported_version: int = 0
    reported_at: float | None = None
    sent_version: int = 0
    sent_at: float | None = None
    desc_hash: str = ""
    birth_cfg: int = 0
    keys: dict[str, KeyRow] = field(default_factory=dict)


def _load(text: str | None) -> tuple[bool, Any]:
    return (False, None) if text is None else (True, json.loads(text))


class ConfigStore:
    """Configuration and description rows on one connection (one owner per connection)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _ensure(self, device_id: str) -> None:
        self.conn.execute("INSERT INTO config_devices (device_id) VALUES (?) ON CONFLICT (device_id) DO NOTHING",
                          [device_id])

    # ------------------------------------------------------------ desired

    def set_desired(self, device_ids: Iterable[str], values: dict[str, Any], now: float) -> dict[str, int]:
        """Set ``values`` for each device in one transaction; returns each device's new version."""
        out: dict[str, int] = {}
        with transaction(self.conn):
            for device_id in device_ids:
                self._ensure(device_id)
                self.conn.execute("UPDATE config_devices SET version = version + 1 WHERE device_id = ?", [device_id])
                version = int(self.conn.execute("SELECT version FROM config_devices WHERE device_id = ?",
                                                [device_id]).fetchone()[0])
                self.conn.executemany(
                    "INSERT INTO config_keys (device_id, key, desired, set_version, set_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (device_id, key) DO UPDATE SET desired = excluded.desired,"
                    " set_version = excluded.set_version, set_at = excluded.set_at",
                    [(device_id, k, json.dumps(v), version, now) for k, v in values.items()])
                out[device_id] = version
        return out

    def get(self, device_id: str) -> DeviceConfigRow | None:
        """One device's configuration rows (None: never configured, described or born with a config)."""
        row = self.conn.execute(
            "SELECT device_id, version, reported_version, reported_at, sent_version, sent_at, desc_hash, birth_cfg"
            " FROM config_devices WHERE device_id = ?", [device_id]).fetchone()
        if row is None:
            return None
        dev = DeviceConfigRow(*row)
        for k in self.conn.execute(
                "SELECT key, desired, set_version, set_at, reported, reported_version, applied_at, refused_reason,"
                " refused_version FROM config_keys WHERE device_id = ? ORDER BY key", [device_id]):
            has_d, desired = _load(k[1])
            has_r, reported = _load(k[4])
            dev.keys[k[0]] = KeyRow(k[0], desired, k[2], k[3], reported, k[5], k[6], k[7], k[8], has_d, has_r)
        return dev

    def configured_devices(self) -> list[str]:
        """Devices with at least one desired key."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT device_id FROM config_keys WHERE desired IS NOT NULL ORDER BY device_id")]

    def unsent(self) -> list[str]:
        """Devices whose desired version was never sent."""
        return [r[0] for r in self.conn.execute(
            "SELECT device_id FROM config_devices WHERE version > sent_version ORDER BY device_id")]

    def record_sent(self, device_id: str, version: int, now: float) -> None:
        with transaction(self.conn):
            self.conn.execute("UPDATE config_devices SET sent_version = MAX(sent_version, ?), sent_at = ?"
                              " WHERE device_id = ?", [version, now, device_id])

    # ------------------------------------------------------------ reported

    def record_birth(self, device_id: str, desc_hash: str, cfg: int) -> bool:
        """Note a birth's description hash and config version; True when the device lost its configuration
        (its ``cfg`` is below what it reported before: a factory reset), which forgets what it reported.
        Writes nothing when the birth says what the last one said (a fleet's births at a hub start)."""
        row = self.conn.execute("SELECT reported_version, desc_hash, birth_cfg FROM config_devices WHERE device_id = ?",
                                [device_id]).fetchone()
        if row is None and not desc_hash and not cfg:
            return False  # never configured, not described: nothing to remember
        lost = row is not None and cfg < int(row[0])
        if row is not None and not lost and (row[1], int(row[2])) == (desc_hash, cfg):
            return False
        with transaction(self.conn):
            self._ensure(device_id)
            self.conn.execute("UPDATE config_devices SET desc_hash = ?, birth_cfg = ? WHERE device_id = ?",
                              [desc_hash, cfg, device_id])
            if lost:
                self.conn.execute("UPDATE config_devices SET reported_version = ?, sent_version = 0"
                                  " WHERE device_id = ?", [cfg, device_id])
                self.conn.execute("UPDATE config_keys SET reported = NULL, reported_version = 0, applied_at = NULL,"
                                  " refused_reason = NULL, refused_version = 0 WHERE device_id = ?", [device_id])
        return lost

    def record_report(self, device_id: str, version: int, applied: dict[str, Any], refused: dict[str, str],
                      now: float) -> bool:
        """Store a device's report; False (nothing stored) when it is older than the last one stored."""
        with transaction(self.conn):
            self._ensure(device_id)
            last = int(self.conn.execute("SELECT reported_version FROM config_devices WHERE device_id = ?",
                                         [device_id]).fetchone()[0])
            if version < last:
                return False
            self.conn.execute("UPDATE config_devices SET reported_version = ?, reported_at = ? WHERE device_id = ?",
                              [version, now, device_id])
            self.conn.executemany(
                "INSERT INTO config_keys (device_id, key, reported, reported_version, applied_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (device_id, key) DO UPDATE SET reported = excluded.reported,"
                " reported_version = excluded.reported_version, applied_at = excluded.applied_at,"
                " refused_reason = NULL, refused_version = 0",
                [(device_id, k, json.dumps(v), version, now) for k, v in applied.items()])
            self.conn.executemany(
                "INSERT INTO config_keys (device_id, key, refused_reason, refused_version) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id, key) DO UPDATE SET refused_reason = excluded.refused_reason,"
                " refused_version = excluded.refused_version",
                [(device_id, k, why, version) for k, why in refused.items()])
        return True

    def all_devices(self) -> list[DeviceConfigRow]:
        """Every device with configuration rows (for ``fleet config``)."""
        return [d for d in (self.get(r[0]) for r in self.conn.execute(
            "SELECT device_id FROM config_devices ORDER BY device_id")) if d is not None]

    # ------------------------------------------------------------ descriptions

    def save_description(self, desc_hash: str, body: str, device_id: str, now: float) -> bool:
        """Keep a description body under its hash; False when it was already there. The device's other
        descriptions that no birth names any more are deleted: one device cannot fill the table."""
        with transaction(self.conn):
            cur = self.conn.execute("INSERT INTO descriptions (hash, body, device_id, received_at)"
                                    " VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING", [desc_hash, body, device_id, now])
            self.conn.execute("DELETE FROM descriptions WHERE device_id = ? AND hash != ?"
                              " AND hash NOT IN (SELECT desc_hash FROM config_devices)", [device_id, desc_hash])
        return cur.rowcount > 0

    def description_body(self, desc_hash: str) -> str | None:
        row = self.conn.execute("SELECT body FROM descriptions WHERE hash = ?", [desc_hash]).fetchone()
        return row[0] if row else None

    def device_description(self, device_id: str) -> tuple[str, str | None]:
        """(hash named by the device's latest birth, the description body if the hub holds it)."""
        row = self.conn.execute(
            "SELECT c.desc_hash, d.body FROM config_devices c LEFT JOIN descriptions d ON d.hash = c.desc_hash"
            " WHERE c.device_id = ?", [device_id]).fetchone()
        return (row[0], row[1]) if row else ("", None)

    def described_devices(self) -> dict[str, str]:
        """Device id -> description body, for every device whose birth names a description the hub holds."""
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT c.device_id, d.body FROM config_devices c JOIN descriptions d ON d.hash = c.desc_hash")}

    # ------------------------------------------------------------ range flags

    def add_range_flags(self, flags: dict[tuple[str, str], tuple[int, float, float]]) -> None:
        """Add counts of readings outside a declared range: (device, metric) -> (count, last value, last time)."""
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT INTO range_flags (device_id, metric, count, last_value, last_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (device_id, metric) DO UPDATE SET count = count + excluded.count,"
                " last_value = excluded.last_value, last_at = excluded.last_at",
                [(d, m, n, v, t) for (d, m), (n, v, t) in flags.items()])

    def range_flags(self, device_id: str | None = None) -> list[tuple[str, str, int, float, float]]:
        """(device, metric, count, last value, last time) of readings outside a declared range."""
        sql = "SELECT device_id, metric, count, last_value, last_at FROM range_flags"
        params: list[str] = []
        if device_id is not None:
            sql += " WHERE device_id = ?"
            params.append(device_id)
        return [tuple(r) for r in self.conn.execute(sql + " ORDER BY device_id, metric", params)]  # type: ignore[misc]
