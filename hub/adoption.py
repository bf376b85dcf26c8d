"""Worker groups: a surviving worker takes over the broker session of a worker that died.

On Mosquitto 2 a shared subscription keeps serving a member's persistent session after the
member dies: its share of new messages, and its unacknowledged ones, wait in that session
until a client with the same id connects again. So a dead worker's share would only move when
a supervisor restarts it. Here the other workers watch the heartbeats of their group; when one
is silent for ``adopt_after_s``, exactly one of them (claimed in ``hub_adoptions``) connects
with the dead worker's client id, drains and keeps serving its session, and takes over its
unfinished commands. When the worker comes back, the broker hands the session back to it
(a newer connection with the same client id wins) and the adopter steps aside.
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt

from hub.command_service import CommandService
from hub.config import HubSettings
from hub.ingest import Ingest
from hub.storage import CommandStore, Heartbeat, StatusStore, open_database

log = logging.getLogger("fleet.hub.adoption")


def claim(rows: StatusStore, name: str, me: str, beats: dict[str, Heartbeat], adopt_after_s: float,
          now: float) -> bool:
    """Claim ``name`` in ``hub_adoptions`` for worker ``me``; True when ``me`` holds it now.

    Exactly one live worker wins: the first to insert the row, or, when the holder's heartbeat
    (in ``beats``) is older than ``adopt_after_s`` or missing, the first to move the row from it.
    """
    holder = rows.claim_adoption(name, me, now)
    if holder == me:
        return True
    beat = beats.get(holder) if holder else None
    if beat is not None and now - beat.updated_at < adopt_after_s:
        return False  # a live peer has it
    return rows.take_over_adoption(name, me, holder, now)


class AdoptedIngest(Ingest):
    """An ingest on a dead worker's session that never reconnects: losing the session means its owner is back."""

    def __init__(self, settings: HubSettings, password: str | None) -> None:
        super().__init__(settings, password)
        self.lost = threading.Event()
        # paho would otherwise reconnect at once and snatch the session back from its returning owner
        self.client.reconnect_delay_set(3600, 3600)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode,
                       properties: object) -> None:
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        self.lost.set()


class Adopter:
    """The watcher thread of one worker: adopts dead peers of its group and lets them go when they return."""

    def __init__(self, settings: HubSettings, password: str | None, commands: CommandService) -> None:
        assert settings.worker_group, "adoption is for worker groups"
        self.settings = settings
        self.password = password
        self.commands = commands
        self.me = settings.mqtt_client_id
        self.adopted: dict[str, AdoptedIngest] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-hub-adopter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        conn = open_database(self.settings.db)
        rows = StatusStore(conn)
        check_s = min(2.0, self.settings.adopt_after_s / 2)
        try:
            while not self._stop.wait(check_s):
                try:
                    self._check(rows)
                except Exception:  # a locked database or a broker hiccup: try again next round, with the trace logged
                    log.exception("adoption check failed worker=%s", self.me)
        finally:
            for worker in list(self.adopted):
                self._release(rows, worker, "stopping")
            conn.close()

    def _check(self, rows: StatusStore) -> None:
        now = time.time()
        beats = {b.worker: b for b in rows.heartbeats() if b.stats.get("worker_group") == self.settings.worker_group}
        for worker, ingest in list(self.adopted.items()):
            beat = beats.get(worker)
            if ingest.lost.is_set() or (beat is not None and now - beat.updated_at < self.settings.adopt_after_s):
                self._release(rows, worker, "the worker is back")
        for worker, beat in beats.items():
            if worker == self.me or worker in self.adopted or now - beat.updated_at < self.settings.adopt_after_s:
                continue
            if self._claim(rows, worker, beats, now):
                self._adopt(rows, worker)

    def _claim(self, rows: StatusStore, worker: str, beats: dict[str, Heartbeat], now: float) -> bool:
        return claim(rows, worker, self.me, beats, self.settings.adopt_after_s, now)

    def _adopt(self, rows: StatusStore, worker: str) -> None:
        log.warning("adopting the session of silent worker=%s adopter=%s", worker, self.me)
        ingest = AdoptedIngest(self.settings.model_copy(update={"client_id": worker}), self.password)
        ingest.hooks.append(self.commands.on_batch)
        try:
            ingest.start(timeout=10)
        except Exception as exc:  # the worker may have come back in the meantime; retried next round
            log.warning("adoption failed worker=%s error=%r", worker, exc)
            rows.release_adoption(worker, self.me)
            return
        self.adopted[worker] = ingest
        moved = CommandStore(rows.conn).hand_over(worker, self.me)
        if moved and self.commands.bridge is not None:
            bridge = self.commands.bridge
            bridge.post("call", bridge.load, _Discard())
        log.warning("adopted worker=%s adopter=%s commands=%d", worker, self.me, moved)

    def _release(self, rows: StatusStore, worker: str, why: str) -> None:
        ingest = self.adopted.pop(worker)
        ingest.stop()
        rows.release_adoption(worker, self.me)
        log.warning("released worker=%s adopter=%s reason=%s stats=%s", worker, self.me, why,
                    ingest.writer.stats.snapshot() if ingest.writer else {})


class _Discard:
    """A result sink for bridge calls nobody waits for."""

    def put(self, item: object) -> None:
        pass

