"""The hub's firmware side: its own MQTT session and the thread that owns the rollout engine.

paho's network thread only puts the devices' requests (``d/+/g``) and reports (``d/+/u``) on a
queue. One thread, ``fleet-hub-firmware``, owns the engine and its database connection: it takes
them off the queue, ticks the engine, and serves chunks as fast as the token bucket allows. A
separate session means a rollout never queues behind telemetry in the ingest path, and the
bucket keeps the rollout from crowding telemetry out of the broker and the links.

In a worker group only the worker holding the group's rollout claim runs this service
(:mod:`hub.rollout_owner`). There the session is persistent and named for the group, not the
worker: requests and reports that arrive while the owner is dead wait in it for the worker that
takes over. The engine thread checks the claim before each tick and stops, without writing, as
soon as another worker holds it (a worker that stalled past the adoption delay and woke up).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from hub.config import HubSettings
from hub.errors import HubError
from hub.rollout import ChunkJob, RolloutEngine, RolloutSettings, TokenBucket
from hub.storage import FirmwareStore, PresenceStore, StatusStore, StorageError, open_database
from hub.transport import PollingClient, hub_session
from protocol.codec import decode, encode
from protocol.errors import ProtocolError
from protocol.firmware import MAX_CHUNK_CBOR, FirmwareReport, FirmwareRequest
from protocol.topics import MessageClass, parse_topic, subscription_for, topic_for

log = logging.getLogger("fleet.hub.firmware")

HUB_FIRMWARE_RECEIVES = (MessageClass.FIRMWARE_REQUEST, MessageClass.FIRMWARE_REPORT)


@dataclass(frozen=True, slots=True)
class OwnerClaim:
    """A worker group's rollout claim: its name in ``hub_adoptions``, this worker, the shared session's client id."""

    name: str
    worker: str
    session: str


class FirmwareService:
    """Owns the rollout engine's thread and the MQTT session its chunks go out on."""

    def __init__(self, settings: HubSettings, password: str | None, rollout: RolloutSettings | None = None,
                 owner: OwnerClaim | None = None) -> None:
        """``owner``: in a worker group, the claim this worker must hold to drive the rollouts."""
        self.settings = settings
        self.owner = owner
        self.lost = threading.Event()
        """Set when the engine found the claim held by another worker and stopped."""
        self.password = password
        self.rollout = rollout or RolloutSettings()
        self.engine: RolloutEngine | None = None
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self.bad_messages = 0

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe to the devices' requests and reports, start the engine thread."""
        self._client = self._make_client()
        addr = self.settings.address
        self._client.connect_async(addr.host, addr.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise HubError(f"firmware session could not subscribe on {self.settings.broker}")
        self._thread = threading.Thread(target=self._main, name="fleet-hub-firmware", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; what is in the database stays for the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    @property
    def alive(self) -> bool:
        """True while the engine thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        # a clean session: requests that arrive while the hub is down are re-sent by the devices
        # (after their stall timer), so nothing needs to be queued for a hub that is not there
        # a worker group's session outlives its owner: what arrives between a SIGKILL and the takeover
        # waits in it for the next owner, who connects with the same client id
        client_id = self.owner.session if self.owner else f"{s.mqtt_client_id}-fw"
        client = hub_session(PollingClient(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                           clean_session=self.owner is None, protocol=mqtt.MQTTv311), s, self.password)
        client.max_inflight_messages_set(100)

        def on_connect(c: mqtt.Client, u: object, f: object, rc: mqtt.ReasonCode, p: object) -> None:
            if not rc.is_failure:
                c.subscribe([(subscription_for(cls), 1) for cls in HUB_FIRMWARE_RECEIVES])

        client.on_connect = on_connect
        client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        client.on_message = lambda c, u, msg: self._inbox.put((msg.topic, msg.payload))
        return client

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if self._client is not None:
            self._client.publish(topic, payload, qos=1, retain=retain)

    # ------------------------------------------------------------------ the engine's thread

    def _main(self) -> None:
        try:
            conn = open_database(self.settings.db)
        except StorageError as exc:
            log.error("firmware engine not started: %s", exc)
            return
        engine = self.engine = RolloutEngine(FirmwareStore(conn), PresenceStore(conn), self._publish, self.rollout)
        claims = StatusStore(conn)
        bucket = TokenBucket(1.0, 1.0)
        pending: deque[ChunkJob] = deque()
        queued: set[tuple[str, str, int]] = set()
        next_tick = 0.0
        last_summary = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_tick:
                    try:
                        holder = claims.adopter_of(self.owner.name) if self.owner is not None else None
                    except sqlite3.Error as exc:  # a locked database: not sure we still own it, so skip this tick
                        log.warning("rollout claim not read error=%r", exc)
                        next_tick = now + self.rollout.tick_s
                        continue
                    if self.owner is not None and holder != self.owner.worker:
                        log.warning("rollouts now driven by another worker: stepping down worker=%s",
                                    self.owner.worker)
                        self.lost.set()
                        return  # without saving: the new owner has reloaded from the database
                    try:
                        engine.tick(time.time())
                    except sqlite3.Error as exc:  # a locked or failing database: what is dirty is saved next tick
                        log.warning("rollout tick failed, trying again next tick error=%r", exc)
                    next_tick = now + self.rollout.tick_s
                    rate = engine.bandwidth()
                    if rate is not None:
                        bucket.set_rate(rate, max(rate * self.rollout.burst_s, MAX_CHUNK_CBOR + 64))
                    if now - last_summary > 10 and engine.stats["requests"]:
                        log.info("firmware serving stats=%s pending=%s bad=%s", engine.stats, len(pending),
                                 self.bad_messages)
                        last_summary = now
                wait = self._serve(engine, bucket, pending, queued)
                timeout = max(0.0, min(next_tick - time.monotonic(), wait))
                try:
                    item = self._inbox.get(timeout=timeout)
                except queue.Empty:
                    continue
                self._handle(engine, item, pending, queued)
                for _ in range(1000):
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    self._handle(engine, item, pending, queued)
        finally:
            try:
                if not self.lost.is_set():
                    engine.save()
            finally:
                conn.close()

    def _handle(self, engine: RolloutEngine, item: tuple[str, bytes], pending: deque[ChunkJob],
                queued: set[tuple[str, str, int]]) -> None:
        topic, payload = item
        try:
            t = parse_topic(topic)
            message = decode(t.cls, payload)
        except ProtocolError as exc:
            self.bad_messages += 1
            log.debug("bad firmware message topic=%s reason=%s", topic[:80], exc.reason.value)
            return
        now = time.time()
        if isinstance(message, FirmwareRequest):
            key = (t.device_id, message.job, message.offset)
            if key in queued:
                return  # the same request again while its answer waits for the bucket
            job = engine.on_request(t.device_id, message, now)
            if job is not None:
                queued.add(key)
                pending.append(job)
        elif isinstance(message, FirmwareReport):
            engine.on_report(t.device_id, message, now)

    def _serve(self, engine: RolloutEngine, bucket: TokenBucket, pending: deque[ChunkJob],
               queued: set[tuple[str, str, int]]) -> float:
        """Send what the bucket allows; returns how long until the next chunk may go (inf: nothing waits)."""
        while pending:
            job = pending[0]
            payload = encode(job.chunk, job.encoding)
            if job.chunk.data:
                wait = bucket.wait_for(len(payload), time.monotonic())
                if wait > 0:
                    return wait
            pending.popleft()
            queued.discard((job.device_id, job.chunk.job, job.chunk.offset))
            topic = topic_for(job.device_id, MessageClass.FIRMWARE_CHUNK)
            self._publish(topic, payload, False)
            engine.served(job, len(payload) + len(topic) + 7)
        return float("inf")
