"""The ``firmware_images``, ``rollouts`` and ``rollout_devices`` tables (issue 16).

The rollout engine (:mod:`hub.rollout`) is the one writer of a running rollout's progress; the
CLI writes only the operator's decisions (a new rollout, pause, resume, abort), each in one
conditional UPDATE, so the two never overwrite each other's fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from hub.storage.connection import Connection, transaction


@dataclass(frozen=True, slots=True)
class ImageRow:
    """A stored firmware image (without its bytes)."""

    id: int
    version: str
    model: str
    size: int
    sha256: str
    added_at: float


@dataclass(frozen=True, slots=True)
class RolloutRow:
    """One staged rollout: its plan, where it is, and what the operator decided."""

    id: int
    image_id: int
    group: str
    stages: tuple[float, ...]
    stage: int
    state: str
    reason: str
    max_failure_rate: float
    max_concurrent: int
    bandwidth: float
    created_at: float
    updated_at: float


@dataclass(slots=True)
class RolloutDeviceRow:
    """One device's part in a rollout; the engine keeps these in memory and saves the changed ones."""

    rollout_id: int
    device_id: str
    stage: int
    state: str
    from_fw: str = ""
    progress: int = 0
    bytes_served: int = 0
    applying_boot: int | None = None
    detail: str = ""
    updated_at: float = 0.0


_IMAGE = "id, version, model, size, sha256, added_at"
_ROLLOUT = ("id, image_id, grp, stages, stage, state, reason, max_failure_rate, max_concurrent, bandwidth, "
            "created_at, updated_at")
_DEVICE = "rollout_id, device_id, stage, state, from_fw, progress, bytes_served, applying_boot, detail, updated_at"


def _rollout(row: tuple) -> RolloutRow:  # type: ignore[type-arg]
    return RolloutRow(row[0], row[1], row[2], tuple(json.loads(row[3])), *row[4:])


class FirmwareStore:
    """Firmware images and rollouts on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # ------------------------------------------------------------ images

    def add_image(self, version: str, model: str, data: bytes, sha256: str, now: float) -> ImageRow | None:
        """Store an image; None when this version (for this model) is already there."""
        with transaction(self.conn):
            if self.conn.execute("SELECT 1 FROM firmware_images WHERE version = ? AND model = ?",
                                 (version, model)).fetchone():
                return None
            row = self.conn.execute(
                "INSERT INTO firmware_images (version, model, size, sha256, data, added_at) VALUES (?, ?, ?, ?, ?, ?)"
                " RETURNING id", (version, model, len(data), sha256, data, now)).fetchone()
        return ImageRow(int(row[0]), version, model, len(data), sha256, now)

    def images(self) -> list[ImageRow]:
        """Every image, oldest first."""
        return [ImageRow(*r) for r in self.conn.execute(f"SELECT {_IMAGE} FROM firmware_images ORDER BY id")]

    def image(self, image_id: int) -> ImageRow | None:
        """One image's row."""
        row = self.conn.execute(f"SELECT {_IMAGE} FROM firmware_images WHERE id = ?", (image_id,)).fetchone()
        return ImageRow(*row) if row else None

    def images_of_version(self, version: str) -> list[ImageRow]:
        """The images stored under ``version`` (one per model)."""
        return [ImageRow(*r) for r in self.conn.execute(
            f"SELECT {_IMAGE} FROM firmware_images WHERE version = ? ORDER BY id", (version,))]

    def image_data(self, image_id: int) -> bytes | None:
        """The bytes of an image."""
        row = self.conn.execute("SELECT data FROM firmware_images WHERE id = ?", (image_id,)).fetchone()
        return bytes(row[0]) if row else None

    # ------------------------------------------------------------ rollouts

    def create_rollout(self, image_id: int, group: str, stages: Iterable[float], max_failure_rate: float,
                       max_concurrent: int, bandwidth: float, devices: Iterable[tuple[str, int, str]],
                       now: float) -> int:
        """A new running rollout and its devices ``(device_id, first stage, fw now)``; returns its id."""
        with transaction(self.conn):
            rollout_id = int(self.conn.execute(
                "INSERT INTO rollouts (image_id, grp, stages, stage, state, max_failure_rate, max_concurrent,"
                " bandwidth, created_at, updated_at) VALUES (?, ?, ?, 0, 'running', ?, ?, ?, ?, ?) RETURNING id",
                (image_id, group, json.dumps(list(stages)), max_failure_rate, max_concurrent, bandwidth, now, now)
            ).fetchone()[0])
            self.conn.executemany(
                "INSERT INTO rollout_devices (rollout_id, device_id, stage, state, from_fw, updated_at)"
                " VALUES (?, ?, ?, 'pending', ?, ?)",
                [(rollout_id, dev, stage, fw, now) for dev, stage, fw in devices])
        return rollout_id

    def rollouts(self, states: Iterable[str] | None = None) -> list[RolloutRow]:
        """Rollouts, newest first; only those in ``states`` when given."""
        if states is None:
            rows = self.conn.execute(f"SELECT {_ROLLOUT} FROM rollouts ORDER BY id DESC")
        else:
            wanted = list(states)
            marks = ", ".join("?" * len(wanted))
            rows = self.conn.execute(f"SELECT {_ROLLOUT} FROM rollouts WHERE state IN ({marks}) ORDER BY id DESC",
                                     wanted)
        return [_rollout(r) for r in rows]

    def rollout(self, rollout_id: int) -> RolloutRow | None:
        """One rollout."""
        row = self.conn.execute(f"SELECT {_ROLLOUT} FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        return _rollout(row) if row else None

    def set_rollout_state(self, rollout_id: int, state: str, reason: str, now: float,
                          only_from: Iterable[str]) -> bool:
        """Move a rollout to ``state`` if it is in one of ``only_from``; False when it was not."""
        allowed = list(only_from)
        marks = ", ".join("?" * len(allowed))
        with transaction(self.conn):
            cur = self.conn.execute(
                f"UPDATE rollouts SET state = ?, reason = ?, updated_at = ? WHERE id = ? AND state IN ({marks})",
                (state, reason, now, rollout_id, *allowed))
        return cur.rowcount == 1

    def set_stage(self, rollout_id: int, stage: int, now: float) -> None:
        """The engine moved the rollout on to ``stage`` (0-based)."""
        with transaction(self.conn):
            self.conn.execute("UPDATE rollouts SET stage = ?, updated_at = ? WHERE id = ?", (stage, now, rollout_id))

    def rollout_devices(self, rollout_id: int) -> list[RolloutDeviceRow]:
        """The devices of a rollout, by stage then id."""
        return [RolloutDeviceRow(*r) for r in self.conn.execute(
            f"SELECT {_DEVICE} FROM rollout_devices WHERE rollout_id = ? ORDER BY stage, device_id", (rollout_id,))]

    def save_devices(self, rows: Iterable[RolloutDeviceRow]) -> None:
        """Write the engine's changed device rows in one transaction."""
        batch = [(r.state, r.progress, r.bytes_served, r.applying_boot, r.detail, r.updated_at, r.rollout_id,
                  r.device_id) for r in rows]
        if not batch:
            return
        with transaction(self.conn):
            self.conn.executemany(
                "UPDATE rollout_devices SET state = ?, progress = ?, bytes_served = ?, applying_boot = ?, detail = ?,"
                " updated_at = ? WHERE rollout_id = ? AND device_id = ?", batch)
