"""Firmware images and staged rollouts: the operator's side (``fleet firmware ...``, ``fleet rollout ...``).

The CLI calls these functions; the rollout itself is driven by :mod:`hub.rollout` inside the
running hub, which picks a new rollout (or a pause, resume, abort) up from the database.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from broker.registry import Registry, Role
from hub.storage import FirmwareStore, ImageRow, PresenceStore, RolloutRow, open_database, reading
from protocol.errors import FleetError
from protocol.firmware import FINAL_FIRMWARE_STATES, sha256_hex
from protocol.text import inert

MAX_IMAGE_BYTES = 64 * 1024 * 1024
"""Images are kept in fleet.db; 64 MB is far above any MCU image and far below trouble for SQLite."""

ACTIVE_ROLLOUT_STATES = ("running", "paused")
"""Rollouts the engine drives; ``completed`` and ``aborted`` are final."""

DEVICE_ACTIVE_STATES = ("offered", "downloading", "verifying", "applying")
"""A device's job in one of these states counts against ``max_concurrent``."""


class FirmwareError(FleetError):
    """An image or a rollout request that cannot be carried out; the message says what to do."""


# ------------------------------------------------------------------ parsing operator input


def parse_percent(text: str) -> float:
    """``'5%'`` -> 0.05; ``'0.05'`` -> 0.05. Raises FirmwareError."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise FirmwareError(f"{text!r} is not a percentage (examples: 5%, 0.05)") from None
    if not 0.0 <= value <= 1.0:
        raise FirmwareError(f"{text!r}: a percentage lies in 0..100%")
    return value


def parse_stages(text: str) -> tuple[float, ...]:
    """``'1%,10%,50%,100%'`` -> (0.01, 0.1, 0.5, 1.0): rising, the last one 100%."""
    stages = tuple(parse_percent(part) for part in text.split(",") if part.strip())
    if not stages or any(b <= a for a, b in zip(stages, stages[1:])) or stages[0] <= 0:
        raise FirmwareError(f"stages {text!r}: give rising percentages, e.g. 1%,10%,50%,100%")
    if stages[-1] != 1.0:
        raise FirmwareError(f"stages {text!r}: the last stage must be 100%")
    return stages


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|KiB|MB|MiB)?(?:/s)?\s*$")
_RATE_UNITS = {None: 1, "B": 1, "kB": 1000, "KB": 1000, "KiB": 1024, "MB": 1_000_000, "MiB": 1024 * 1024}


def parse_bandwidth(text: str) -> float:
    """``'50kB/s'`` -> 50000.0 bytes per second."""
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise FirmwareError(f"{text!r} is not a bandwidth (examples: 50kB/s, 2MB/s, 4096B/s)")
    return float(match.group(1)) * _RATE_UNITS[match.group(2)]


def stage_plan(device_ids: list[str], stages: tuple[float, ...], version: str) -> dict[str, int]:
    """Which stage (0-based) first includes each device: a stable shuffle, so canaries are not always the same ids.

    Stage ``k`` covers the first ``ceil(stages[k] * n)`` devices of the shuffled order (at least one).
    """
    order = sorted(device_ids, key=lambda d: hashlib.sha256(f"{version}:{d}".encode()).digest())
    plan: dict[str, int] = {}
    start = 0
    for k, share in enumerate(stages):
        end = max(1, math.ceil(share * len(order) - 1e-9))
        for dev in order[start:end]:
            plan[dev] = k
        start = max(start, end)
    return plan


# ------------------------------------------------------------------ images


def add_image(db: str | Path, path: Path, version: str, model: str = "") -> ImageRow:
    """Store the image at ``path`` as ``version`` (for ``model``, '' = any) with its size and SHA-256."""
    if not 1 <= len(version) <= 32 or inert(version) != version:
        raise FirmwareError(f"version {version!r}: 1 to 32 printable characters (it travels in the birth's fw field)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FirmwareError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise FirmwareError(f"{path} is empty: not a firmware image")
    if len(data) > MAX_IMAGE_BYTES:
        raise FirmwareError(f"{path} is {len(data)} bytes, above the {MAX_IMAGE_BYTES} byte limit")
    conn = open_database(db)
    try:
        row = FirmwareStore(conn).add_image(version, model, data, sha256_hex(data), time.time())
    finally:
        conn.close()
    if row is None:
        raise FirmwareError(f"firmware {version}{' for ' + model if model else ''} is already stored; "
                            "give the new image a new version")
    return row


def list_images(db: str | Path) -> list[dict[str, Any]]:
    """Every stored image (without its bytes)."""
    with reading(db) as conn:
        return [asdict(r) for r in FirmwareStore(conn).images()]


# ------------------------------------------------------------------ rollouts


def start_rollout(db: str | Path, version: str, group: str, stages: tuple[float, ...], max_failure_rate: float,
                  max_concurrent: int, bandwidth: float) -> int:
    """Create a running rollout of ``version`` to the active devices of ``group``; the hub drives it."""
    if max_concurrent < 1:
        raise FirmwareError("--max-concurrent must be at least 1")
    conn = open_database(db)
    try:
        store = FirmwareStore(conn)
        images = store.images_of_version(version)
        if not images:
            raise FirmwareError(f"no firmware {version!r}: add it first with `fleet firmware add FILE --version {version}`")
        if len(images) > 1:
            raise FirmwareError(f"firmware {version!r} is stored for several models; rollouts per model are not supported yet")
        image = images[0]
        members = [p for p in Registry(conn).list(Role.DEVICE, group) if p.active]
        if image.model:
            members = [p for p in members if f"model={image.model}" in p.tags]
        if not members:
            raise FirmwareError(f"group {group!r} has no active devices{' tagged model=' + image.model if image.model else ''}")
        busy = {r.group for r in store.rollouts(ACTIVE_ROLLOUT_STATES)}
        if group in busy:
            raise FirmwareError(f"group {group!r} already has a rollout running or paused: abort it first")
        fw = {d.device_id: d.fw or "" for d in PresenceStore(conn).load_devices()}
        plan = stage_plan([p.id for p in members], stages, version)
        return store.create_rollout(image.id, group, stages, max_failure_rate, max_concurrent, bandwidth,
                                    [(dev, stage, fw.get(dev, "")) for dev, stage in plan.items()], time.time())
    finally:
        conn.close()


def _change(db: str | Path, rollout_id: int | None, state: str, reason: str, only_from: tuple[str, ...]) -> int:
    conn = open_database(db)
    try:
        store = FirmwareStore(conn)
        if rollout_id is None:
            active = store.rollouts(only_from)
            if len(active) != 1:
                raise FirmwareError(f"{len(active)} rollouts are {' or '.join(only_from)}: name one by its id")
            rollout_id = active[0].id
        row = store.rollout(rollout_id)
        if row is None:
            raise FirmwareError(f"no rollout {rollout_id}")
        if not store.set_rollout_state(rollout_id, state, reason, time.time(), only_from):
            raise FirmwareError(f"rollout {rollout_id} is {row.state}: it can be set {state} only when "
                                f"{' or '.join(only_from)}")
        return rollout_id
    finally:
        conn.close()


def pause_rollout(db: str | Path, rollout_id: int | None = None) -> int:
    """Pause a running rollout: no new device is offered the image; downloads under way finish."""
    return _change(db, rollout_id, "paused", "paused by operator", ("running",))


def resume_rollout(db: str | Path, rollout_id: int | None = None) -> int:
    """Resume a paused rollout (also one that paused itself on its failure rate)."""
    return _change(db, rollout_id, "running", "", ("paused",))


def abort_rollout(db: str | Path, rollout_id: int | None = None) -> int:
    """Abort a rollout: the hub withdraws its offers and refuses further chunks of it."""
    return _change(db, rollout_id, "aborted", "aborted by operator", ACTIVE_ROLLOUT_STATES)


@dataclass(frozen=True)
class RolloutStatus:
    """A rollout and its devices counted by state, for ``fleet rollout status``."""

    id: int
    version: str
    group: str
    state: str
    reason: str
    stage: int
    stages: tuple[float, ...]
    devices: int
    counts: dict[str, int]
    stage_sizes: tuple[int, ...]
    stage_done: tuple[int, ...]
    failure_rate: float
    max_failure_rate: float
    bytes_served: int
    image_size: int
    progress_bytes: int
    failures: list[dict[str, str]]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return asdict(self)


def _status(store: FirmwareStore, row: RolloutRow) -> RolloutStatus:
    image = store.image(row.image_id)
    devices = store.rollout_devices(row.id)
    counts: dict[str, int] = {}
    for d in devices:
        counts[d.state] = counts.get(d.state, 0) + 1
    finished = sum(counts.get(s, 0) for s in FINAL_FIRMWARE_STATES)
    failures = counts.get("failed", 0) + counts.get("rolled_back", 0)
    sizes = tuple(sum(1 for d in devices if d.stage == k) for k in range(len(row.stages)))
    done = tuple(sum(1 for d in devices if d.stage == k and d.state in FINAL_FIRMWARE_STATES)
                 for k in range(len(row.stages)))
    size = image.size if image else 0
    progress = sum(size if d.state in ("verifying", "applying", "succeeded") else d.progress for d in devices)
    return RolloutStatus(
        row.id, image.version if image else "?", row.group, row.state, row.reason, row.stage, row.stages,
        len(devices), counts, sizes, done, failures / finished if finished else 0.0, row.max_failure_rate,
        sum(d.bytes_served for d in devices), size, progress,
        [{"device": d.device_id, "state": d.state, "detail": inert(d.detail)}
         for d in devices if d.state in ("failed", "rolled_back")])


def rollout_status(db: str | Path, rollout_id: int | None = None, *, all_: bool = False) -> list[RolloutStatus]:
    """The named rollout, else the active ones (every one with ``all_``), newest first."""
    with reading(db) as conn:
        store = FirmwareStore(conn)
        if rollout_id is not None:
            row = store.rollout(rollout_id)
            if row is None:
                raise FirmwareError(f"no rollout {rollout_id}")
            rows = [row]
        else:
            rows = store.rollouts(None if all_ else ACTIVE_ROLLOUT_STATES)
        return [_status(store, r) for r in rows]
