"""Worker groups: exactly one worker of a group drives the rollouts, and another takes over when it dies.

Each worker of a group reads the same database; if each ran the rollout engine (:mod:`hub.rollout`),
each would offer the image, answer every chunk request and count every report. So one worker
holds the group's rollout claim, a row named ``rollouts@<group>`` in ``hub_adoptions``, taken by
the same rule by which one worker adopts a dead peer's session (:func:`hub.adoption.claim`): the
first to insert it, or, when the holder's heartbeat is older than ``adopt_after_s``, the first to
move it. The holder runs the :class:`~hub.firmware_service.FirmwareService`; the others check
every couple of seconds and stand by.

One worker drives all the group's rollouts, not one worker per rollout: the bandwidth cap is
fleet-wide (one token bucket), and that holds only if one process serves every chunk.

A SIGKILLed owner loses at most one tick of unsaved device progress (the devices report again and
re-request a chunk after their stall timer). Its firmware session is persistent and named for
the group, so the requests and reports that arrive before the takeover wait for the next owner.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from hub.adoption import claim
from hub.config import HubSettings
from hub.errors import HubError
from hub.firmware_service import FirmwareService, OwnerClaim
from hub.rollout import RolloutSettings
from hub.storage import StatusStore, StorageError, open_database

log = logging.getLogger("fleet.hub.rollout_owner")


def claim_name(group: str) -> str:
    """The row of ``hub_adoptions`` that says which worker of ``group`` drives its rollouts."""
    return f"rollouts@{group}"


class RolloutOwner:
    """One worker's bid for its group's rollouts: runs the firmware service while it holds the claim."""

    def __init__(self, settings: HubSettings, password: str | None, rollout: RolloutSettings | None = None) -> None:
        assert settings.worker_group, "a rollout owner is for worker groups"
        self.settings = settings
        self.password = password
        self.rollout = rollout
        self.claim = OwnerClaim(claim_name(settings.worker_group), settings.mqtt_client_id,
                                f"hub-rollouts-{settings.worker_group}")
        self.service: FirmwareService | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-hub-rollout-owner", daemon=True)

    @property
    def owns(self) -> bool:
        """True while this worker drives the group's rollouts."""
        service = self.service
        return service is not None and not service.lost.is_set()

    def start(self) -> None:
        """Start bidding (in the background: a worker that does not win still serves telemetry)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop driving, and give the claim up so that a peer takes over at once."""
        self._stop.set()
        self._thread.join(20)

    def _run(self) -> None:
        try:
            conn = open_database(self.settings.db)
        except StorageError as exc:
            log.error("rollout owner not started worker=%s: %s", self.claim.worker, exc)
            return
        rows = StatusStore(conn)
        check_s = min(2.0, self.settings.adopt_after_s / 2)
        try:
            while True:
                try:
                    self._check(rows, time.time())
                except (sqlite3.Error, OSError) as exc:  # a locked database: try again next round
                    log.warning("rollout claim check failed worker=%s error=%r", self.claim.worker, exc)
                if self._stop.wait(check_s):
                    break
        finally:
            self._step_down(rows, "stopping", release=True)
            conn.close()

    def _check(self, rows: StatusStore, now: float) -> None:
        if self.service is not None:
            holder = rows.adopter_of(self.claim.name)
            if self.service.lost.is_set() or holder != self.claim.worker:
                self._step_down(rows, f"the claim is held by {holder}", release=False)
            elif not self.service.alive:  # its thread ended: give the claim up, a peer (or this worker) bids again
                self._step_down(rows, "the engine thread ended", release=True)
            return
        group = self.settings.worker_group
        beats = {b.worker: b for b in rows.heartbeats() if b.stats.get("worker_group") == group}
        if not claim(rows, self.claim.name, self.claim.worker, beats, self.settings.adopt_after_s, now):
            return
        service = FirmwareService(self.settings, self.password, self.rollout, owner=self.claim)
        try:
            service.start()
        except HubError as exc:  # the broker is away: give the claim back, bid again next round
            log.warning("rollout owner could not start worker=%s error=%s", self.claim.worker, exc)
            rows.release_adoption(self.claim.name, self.claim.worker)
            return
        self.service = service
        log.warning("driving the rollouts of group=%s worker=%s", group, self.claim.worker)

    def _step_down(self, rows: StatusStore, why: str, release: bool) -> None:
        service, self.service = self.service, None
        if service is None:
            return
        service.stop()
        if release and not service.lost.is_set():
            try:
                rows.release_adoption(self.claim.name, self.claim.worker)
            except sqlite3.Error as exc:
                log.warning("rollout claim not released worker=%s error=%r", self.claim.worker, exc)
        log.warning("stopped driving the rollouts of group=%s worker=%s reason=%s", self.settings.worker_group,
                    self.claim.worker, why)
