"""The rollout engine: drives every running rollout from the hub (firmware_protocol.md section 12).

One owner: :class:`RolloutEngine` is used only by the firmware service's thread
(:mod:`hub.firmware_service`), which feeds it the devices' requests and reports and calls
:meth:`RolloutEngine.tick` a few times a second with the clock. All state that must survive a
hub restart is in the database (``rollouts``, ``rollout_devices``); the engine reloads it on start
and reads the operator's decisions (pause, resume, abort, a new rollout) from there on each tick.

Per tick, for each active rollout:

1. a device whose birth shows the target version is ``succeeded``; one that reported ``applying``
   and came back (a later boot) with another version is ``rolled_back``; one that made no
   progress for ``device_timeout_s`` is ``failed``;
2. failure rate = (failed + rolled back) / finished; above ``max_failure_rate`` the rollout
   pauses itself, with the reason;
3. a stage is complete when each of its devices is finished, or still pending and offline; then
   the next stage opens (devices offline during their stage are offered the image when they come
   back; a device that vanishes mid-update holds its stage until ``device_timeout_s`` fails it);
4. online devices of the open stages are offered the image (retained on ``d/<id>/o``) while fewer
   than ``max_concurrent`` are busy.

Chunks are served through one :class:`TokenBucket` whose rate is the smallest ``bandwidth`` of the
running rollouts: the fleet-wide cap that keeps room for telemetry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from hub.firmware import ACTIVE_ROLLOUT_STATES, DEVICE_ACTIVE_STATES
from hub.storage import DeviceRow, FirmwareStore, ImageRow, PresenceStore, RolloutDeviceRow, RolloutRow
from protocol.codec import WireMessage, encode
from protocol.firmware import (
    FINAL_FIRMWARE_STATES,
    FirmwareChunk,
    FirmwareOffer,
    FirmwareReport,
    FirmwareRequest,
    FirmwareState,
    chunk_for,
    max_chunk,
)
from protocol.text import inert
from protocol.topics import MessageClass, topic_for

log = logging.getLogger("fleet.hub.rollout")

Publish = Callable[[str, bytes, bool], None]
"""``publish(topic, payload, retain)`` at QoS 1 on the firmware service's session."""


class RolloutSettings(BaseModel):
    """Timing of the rollout engine; defaults suit a real fleet, tests shorten them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tick_s: float = Field(0.5, gt=0)
    """How often the engine looks at presence and the operator's decisions."""
    device_timeout_s: float = Field(1800.0, gt=0)
    """An offered or downloading device that makes no progress for this long has failed."""
    burst_s: float = Field(1.0, gt=0)
    """The token bucket holds this many seconds of bandwidth (at least one largest chunk)."""


def job_id(rollout_id: int) -> str:
    """The job id devices see for a rollout."""
    return f"r{rollout_id}"


class TokenBucket:
    """Bytes per second with a burst; :meth:`take` says how long to wait before the bytes may go."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at: float | None = None

    def set_rate(self, rate: float, burst: float) -> None:
        """Change the rate (the tokens in hand stay, capped at the new burst)."""
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, burst)

    def wait_for(self, n: int, now: float) -> float:
        """0 when ``n`` bytes may be sent now (and they are taken), else the seconds to wait."""
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= n or self.tokens >= self.burst:  # a chunk larger than the burst goes when the bucket is full
            self.tokens -= n
            return 0.0
        return (min(n, self.burst) - self.tokens) / self.rate


@dataclass
class _Active:
    row: RolloutRow
    image: ImageRow
    data: bytes
    devices: dict[str, RolloutDeviceRow]
    dirty: set[str] = field(default_factory=set)

    @property
    def job(self) -> str:
        return job_id(self.row.id)


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """A request accepted for serving: the chunk to send once the bucket allows."""

    device_id: str
    rollout_id: int
    chunk: FirmwareChunk
    encoding: str


class RolloutEngine:
    """Every active rollout's state; see the module docstring for the rules."""

    def __init__(self, store: FirmwareStore, presence: PresenceStore, publish: Publish,
                 settings: RolloutSettings | None = None) -> None:
        self.store = store
        self.presence_store = presence
        self.publish = publish
        self.settings = settings or RolloutSettings()
        self.active: dict[int, _Active] = {}
        self.presence: dict[str, DeviceRow] = {}
        self.finished_jobs: dict[str, str] = {}
        """job id -> final rollout state, to answer late requests with a reason."""
        self.stats = {"requests": 0, "chunks": 0, "bytes": 0, "refused": 0, "reports": 0}

    # ------------------------------------------------------------------ inbound

    def on_request(self, device_id: str, req: FirmwareRequest, now: float) -> ChunkJob | None:
        """Record a device's progress and return the chunk to serve (or an error chunk)."""
        self.stats["requests"] += 1
        active = self._by_job(req.job)
        enc = self._enc(device_id)
        if active is None:
            why = "aborted" if self.finished_jobs.get(req.job) == "aborted" else "unknown job"
            return self._refuse(device_id, req, why, enc)
        row = active.devices.get(device_id)
        if row is None or row.state in ("pending", *FINAL_FIRMWARE_STATES):
            return self._refuse(device_id, req, "not offered to this device", enc)
        if req.offset >= active.image.size:
            return self._refuse(device_id, req, f"offset beyond the image ({active.image.size} bytes)", enc)
        row.state, row.progress, row.updated_at = FirmwareState.DOWNLOADING.value, req.offset, now
        active.dirty.add(device_id)
        return ChunkJob(device_id, active.row.id,
                        chunk_for(active.job, active.data, req.offset, req.length, max_chunk(enc)), enc)

    def _refuse(self, device_id: str, req: FirmwareRequest, why: str, enc: str) -> ChunkJob:
        self.stats["refused"] += 1
        return ChunkJob(device_id, 0, FirmwareChunk(job=req.job, offset=req.offset, error=why), enc)

    def served(self, job: ChunkJob, wire_bytes: int) -> None:
        """Count a chunk that went out."""
        self.stats["chunks"] += 1
        self.stats["bytes"] += wire_bytes
        active = self.active.get(job.rollout_id)
        row = active.devices.get(job.device_id) if active else None
        if active is not None and row is not None:
            row.bytes_served += len(job.chunk.data)
            active.dirty.add(job.device_id)

    def on_report(self, device_id: str, rep: FirmwareReport, now: float) -> None:
        """A device's state for a job."""
        self.stats["reports"] += 1
        active = self._by_job(rep.job)
        row = active.devices.get(device_id) if active else None
        if active is None or row is None or row.state in FINAL_FIRMWARE_STATES:
            return
        state = FirmwareState(rep.state)
        if state is FirmwareState.SUCCEEDED:
            return  # only the next birth with the new version counts as success
        row.state, row.detail, row.updated_at = state.value, rep.detail, now
        if state is FirmwareState.DOWNLOADING:
            row.progress = rep.progress
        elif state is FirmwareState.APPLYING:
            # the report's own boot: presence is a tick old and its writer may lag, so after a power loss
            # mid-download it can still show the boot before, and that reboot's birth would look like a rollback
            p = self.presence.get(device_id)
            row.applying_boot = rep.boot or (p.boot if p is not None else None)
        active.dirty.add(device_id)
        if state in (FirmwareState.FAILED, FirmwareState.ROLLED_BACK):
            log.info("firmware %s device_id=%s job=%s detail=%s", state.value, device_id, rep.job, inert(rep.detail))
            self._withdraw(device_id)

    # ------------------------------------------------------------------ tick

    def tick(self, now: float) -> None:
        """Pick up the operator's decisions, settle devices from presence, move stages, offer the image."""
        self._reload(now)
        self.presence = {d.device_id: d for d in self.presence_store.load_devices()}
        for active in list(self.active.values()):
            self._settle(active, now)
            self._save(active)  # what the devices did is on disk before the stage moves on
            if active.row.state == "running":
                self._check_failures(active, now)
            if active.row.state == "running":
                self._advance(active, now)
            if active.row.state == "running":
                self._offer(active, now)
            self._save(active)
            if all(d.state in FINAL_FIRMWARE_STATES for d in active.devices.values()):
                self._finish(active, "completed", "every device finished", now)

    def save(self) -> None:
        """Write every changed device row (the service calls it when it stops)."""
        for active in self.active.values():
            self._save(active)

    def bandwidth(self) -> float | None:
        """The fleet-wide chunk rate: the smallest cap of the active rollouts (None: no rollout)."""
        caps = [a.row.bandwidth for a in self.active.values()]
        return min(caps) if caps else None

    def _reload(self, now: float) -> None:
        rows = {r.id: r for r in self.store.rollouts(ACTIVE_ROLLOUT_STATES)}
        for rid, active in list(self.active.items()):
            row = rows.get(rid)
            if row is None:  # the operator aborted it (or it finished)
                final = self.store.rollout(rid)
                self._save(active)
                self._drop(active, final.state if final else "aborted", now)
            else:
                active.row = row
        for rid, row in rows.items():
            if rid not in self.active:
                image = self.store.image(row.image_id)
                data = self.store.image_data(row.image_id)
                if image is None or data is None:
                    self.store.set_rollout_state(rid, "aborted", "its image is gone", now, ACTIVE_ROLLOUT_STATES)
                    continue
                devices = {d.device_id: d for d in self.store.rollout_devices(rid)}
                self.active[rid] = _Active(row, image, data, devices)
                log.info("rollout picked up id=%s version=%s group=%s devices=%s state=%s", rid, image.version,
                         row.group, len(devices), row.state)

    def _settle(self, active: _Active, now: float) -> None:
        target = active.image.version
        for dev, row in active.devices.items():
            if row.state in FINAL_FIRMWARE_STATES:
                continue
            p = self.presence.get(dev)
            if p is not None and p.fw == target and p.state == "online":
                self._set(active, row, FirmwareState.SUCCEEDED.value, "", now)
            elif (row.state == "applying" and p is not None and p.state == "online" and p.boot is not None
                  and row.applying_boot is not None and p.boot > row.applying_boot):
                self._set(active, row, FirmwareState.ROLLED_BACK.value, f"came back running {inert(p.fw or '?')}", now)
            elif row.state in DEVICE_ACTIVE_STATES and now - row.updated_at > self.settings.device_timeout_s:
                self._set(active, row, FirmwareState.FAILED.value,
                          f"no progress for {self.settings.device_timeout_s:.0f} s", now)

    def _set(self, active: _Active, row: RolloutDeviceRow, state: str, detail: str, now: float) -> None:
        row.state, row.detail, row.updated_at = state, detail, now
        if state == FirmwareState.SUCCEEDED.value:
            row.progress = active.image.size
        active.dirty.add(row.device_id)
        if state in FINAL_FIRMWARE_STATES:
            self._withdraw(row.device_id)

    def _check_failures(self, active: _Active, now: float) -> None:
        states = [d.state for d in active.devices.values()]
        finished = sum(1 for s in states if s in FINAL_FIRMWARE_STATES)
        failures = sum(1 for s in states if s in ("failed", "rolled_back"))
        if finished and failures / finished > active.row.max_failure_rate:
            reason = (f"failure rate {failures}/{finished} = {failures / finished:.0%} passed "
                      f"{active.row.max_failure_rate:.0%}")
            if self.store.set_rollout_state(active.row.id, "paused", reason, now, ("running",)):
                log.warning("rollout paused itself id=%s reason=%s", active.row.id, reason)
                active.row = self.store.rollout(active.row.id) or active.row

    def _advance(self, active: _Active, now: float) -> None:
        stage = active.row.stage
        if stage + 1 >= len(active.row.stages):
            return
        for dev, row in active.devices.items():
            if row.stage > stage or row.state in FINAL_FIRMWARE_STATES:
                continue
            if row.state != "pending":
                return  # under way (a device rebooting into the image is offline for a moment)
            p = self.presence.get(dev)
            if p is not None and p.state == "online":
                return  # about to be offered
        self.store.set_stage(active.row.id, stage + 1, now)
        active.row = self.store.rollout(active.row.id) or active.row
        log.info("rollout stage id=%s stage=%s/%s", active.row.id, stage + 2, len(active.row.stages))

    def _offer(self, active: _Active, now: float) -> None:
        busy = sum(1 for d in active.devices.values() if d.state in DEVICE_ACTIVE_STATES)
        room = active.row.max_concurrent - busy
        if room <= 0:
            return
        offer = FirmwareOffer(job=active.job, version=active.image.version, size=active.image.size,
                              sha256=active.image.sha256)
        for dev, row in active.devices.items():
            if room <= 0:
                break
            if row.state != "pending" or row.stage > active.row.stage:
                continue
            p = self.presence.get(dev)
            if p is None or p.state != "online":
                continue
            self._publish(dev, MessageClass.FIRMWARE_OFFER, offer, retain=True)
            row.state, row.updated_at = "offered", now
            active.dirty.add(dev)
            room -= 1

    def _finish(self, active: _Active, state: str, reason: str, now: float) -> None:
        if self.store.set_rollout_state(active.row.id, state, reason, now, ACTIVE_ROLLOUT_STATES):
            log.info("rollout %s id=%s", state, active.row.id)
        self._drop(active, state, now)

    def _drop(self, active: _Active, state: str, now: float) -> None:
        """Stop driving a rollout; withdraw the offers of its unfinished devices."""
        for row in active.devices.values():
            if row.state not in FINAL_FIRMWARE_STATES and row.state != "pending":
                self._withdraw(row.device_id)
        self.finished_jobs[active.job] = state
        self.active.pop(active.row.id, None)

    def _save(self, active: _Active) -> None:
        if active.dirty:
            self.store.save_devices(active.devices[d] for d in active.dirty)
            active.dirty.clear()

    # ------------------------------------------------------------------ helpers

    def _by_job(self, job: str) -> _Active | None:
        if not job.startswith("r") or not job[1:].isdigit():
            return None
        return self.active.get(int(job[1:]))

    def _enc(self, device_id: str) -> str:
        p = self.presence.get(device_id)
        return p.enc if p is not None and p.enc in ("json", "cbor") else "json"

    def _withdraw(self, device_id: str) -> None:
        """Clear the retained offer (an empty retained payload deletes it at the broker)."""
        self.publish(topic_for(device_id, MessageClass.FIRMWARE_OFFER), b"", True)

    def _publish(self, device_id: str, cls: MessageClass, message: WireMessage, retain: bool = False) -> None:
        self.publish(topic_for(device_id, cls), encode(message, self._enc(device_id)), retain)
