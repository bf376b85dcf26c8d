"""The ingest path: paho's thread -> bounded queue -> one writer thread -> commit -> acks.

paho runs its network loop in its own thread and only puts each PUBLISH on a bounded
queue. When the queue is full, paho's thread waits: it reads nothing more from the socket,
acknowledges nothing, and the broker keeps the rest (backpressure instead of loss). The
writer thread owns the SQLite connection; it takes what the queue holds (up to
``batch_max_rows`` messages, or what arrived within ``batch_max_age_s`` of the first one),
commits it in one transaction and only then acknowledges each message of the batch
(``manual_ack``). Between batches it runs the presence check and one retention chunk.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from hub.config import HubSettings
from hub.errors import HubError
from hub.inbound import HUB_RECEIVES, Inbound
from hub.metrics import COMMIT_BUCKETS, Buckets
from hub.skew import SKEW_SUMMARY_S
from hub.store import HubStore
from hub.transport import IngestClient, Publish, hub_session
from hub.watermark_holds import WatermarkHolds
from hub.writer import BatchResult, BatchWriter
from protocol.topics import MessageClass, subscription_for, topic_for

log = logging.getLogger("fleet.hub.ingest")

_new = tuple.__new__
_TOPIC_CACHED = 128
"""Longest topic kept decoded (a device topic is far shorter; anything longer is decoded each time, so the
cache stays small whatever a client publishes to)."""

WRITE_RETRY_S = 1.0
"""Pause between attempts to commit a batch the database refused (disk full, read-only file)."""

BatchHook = Callable[[BatchResult], None]
"""Called on the writer thread after each commit (the command bridge hooks replies here)."""


class Ingest:
    """The MQTT client and the writer thread of one hub."""

    def __init__(self, settings: HubSettings, password: str | None, holds: WatermarkHolds | None = None) -> None:
        self.settings = settings
        self.holds = holds or WatermarkHolds()
        """Devices whose watermarks ``fleet device-check`` holds (granted by the command bridge)."""
        # SimpleQueue: put and get are C calls without queue.Queue's Python-level lock and conditions
        # (8% of the hub's GIL time at 10,000 msg/s). Each item is the messages of one socket read; the bound
        # (in messages) is kept by paho's thread, the only producer: each side counts what it moved, so
        # their difference is what waits, without a shared lock.
        self.queue: queue.SimpleQueue[list[Inbound]] = queue.SimpleQueue()
        self._queue_max = settings.queue_size
        self._queued = 0
        """Messages put on the queue so far (paho's thread)."""
        self._taken = 0
        """Messages taken from it so far (the writer)."""
        self._leftover: list[Inbound] = []
        """What the writer took beyond its batch limit: the start of its next batch."""
        self._topics: dict[bytes, str] = {}
        """Topics as received -> as text (each device publishes to a handful)."""
        self._taken_at = 0.0
        """When the newest message the writer took arrived (the messages still waiting came later)."""
        self.hooks: list[BatchHook] = []
        self.commit_seconds = Buckets(COMMIT_BUCKETS)
        self.write_failures = 0
        """Batch commits the database refused (each retry counts)."""
        self.store_failing: str | None = None
        """The last database error while a batch cannot be committed; None when writes work."""
        self.last_commit_at = 0.0
        """Wall-clock time of the last committed batch (0 before the first): how stale the database is."""
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.generation = 0
        self._stop = threading.Event()
        self._writer_thread: threading.Thread | None = None
        self.writer: BatchWriter | None = None
        self._store_ready = threading.Event()
        self._store_error: BaseException | None = None
        self._probe_topic = f"fleet/probe/{settings.mqtt_client_id}"
        self._probe_topic_bytes = self._probe_topic.encode()
        self._probe_seen = threading.Event()
        self.client = self._make_client(password)

    # ------------------------------------------------------------------ paho side (network thread)

    def _make_client(self, password: str | None) -> IngestClient:
        s = self.settings
        client = IngestClient(mqtt.CallbackAPIVersion.VERSION2, client_id=s.mqtt_client_id, clean_session=False,
                             protocol=mqtt.MQTTv311, manual_ack=True)
        hub_session(client, s, password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.publish_sink = self._on_publishes
        return client

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: mqtt.ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.error("connect refused broker=%s reason=%s", self.settings.broker, reason_code)
            return
        self.generation += 1
        log.info("connected broker=%s session_present=%s generation=%s",
                 self.settings.broker, flags.session_present, self.generation)
        client.subscribe([(self.settings.shared(subscription_for(c)), 1) for c in HUB_RECEIVES])
        self.connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list[mqtt.ReasonCode],
                      properties: object) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("subscribe refused reasons=%s", [str(rc) for rc in reason_codes])
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode,
                       properties: object) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected broker=%s reason=%s (paho reconnects)", self.settings.broker, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        # what IngestClient's fast path does not cut out of its buffer arrives here
        self._on_publishes([(message._topic, message.payload, message.mid, message.qos, bool(message.retain))])

    def _on_publishes(self, publishes: list[Publish]) -> None:
        now, generation, topics = time.time(), self.generation, self._topics
        items = []
        for topic_bytes, payload, mid, qos, retain in publishes:
            topic = topics.get(topic_bytes)
            if topic is None:
                if topic_bytes == self._probe_topic_bytes:
                    self._probe_seen.set()
                    continue
                try:
                    topic = topic_bytes.decode()
                except UnicodeDecodeError:
                    topic = topic_bytes.decode("utf-8", "replace")  # dead-lettered as bad_topic
                if len(topic_bytes) <= _TOPIC_CACHED:
                    if len(topics) >= 1 << 16:
                        topics.clear()
                    topics[topic_bytes] = topic
            # tuple.__new__: a named tuple without its class's Python-level __new__ (one per message)
            items.append(_new(Inbound, (topic, payload, mid, qos, retain, now, generation)))
        if not items:
            return
        # Wait while the writer is behind: the broker holds what we do not read (never drop).
        while self._queued - self._taken >= self._queue_max:
            if self._stop.wait(0.005):
                return  # stopping: leave them unacked, the broker redelivers them to our persistent session
        self._queued += len(items)
        self.queue.put(items)

    # ------------------------------------------------------------------ writer side (writer thread)

    def _writer_main(self) -> None:
        try:
            store = HubStore(self.settings.db)
            self.writer = BatchWriter(store, self.settings)
        except BaseException as exc:  # reported to start() and re-raised there
            self._store_error = exc
            self._store_ready.set()
            return
        self._store_ready.set()
        s = self.settings
        next_presence = time.monotonic() + s.presence_check_s
        next_retention = time.monotonic() + 1.0
        retention_more = False
        next_skew = time.monotonic() + SKEW_SUMMARY_S
        try:
            while not self._stop.is_set():
                batch = self._collect(timeout=0.1)
                if batch:
                    self._commit(batch)
                for device_id in self.holds.due():  # a hold ended: the device gets its current watermark at once
                    result = self.writer.watermark_now(device_id)
                    self._publish_watermarks(result)
                    mark = result.watermarks.get(device_id)
                    log.info("watermark hold ended device_id=%s watermark=%s", device_id, mark.seq if mark else None)
                now_m = time.monotonic()
                if now_m >= next_skew:
                    next_skew = now_m + SKEW_SUMMARY_S
                    line = self.writer.skew.summary(SKEW_SUMMARY_S)
                    if line:
                        log.info("%s", line)
                if now_m >= next_presence:
                    next_presence = now_m + s.presence_check_s
                    events = self.writer.check_stale(time.time(), reload=bool(s.worker_group))
                    if events:  # wills past their hysteresis, stale and sleeping devices: the hooks hear of them
                        self._run_hooks(BatchResult(presence=events))
                if s.retain_days is not None and (retention_more or now_m >= next_retention):
                    if not retention_more:
                        next_retention = now_m + s.retention_check_s
                    deleted = self.writer.delete_old(time.time() - s.retain_days * 86400)
                    retention_more = deleted >= s.retention_chunk
                    if deleted:
                        log.info("retention deleted=%s more=%s", deleted, retention_more)
        finally:
            line = self.writer.skew.summary(time.monotonic() - next_skew + SKEW_SUMMARY_S)
            if line:
                log.info("%s", line)
            store.close()

    def _collect(self, timeout: float) -> list[Inbound]:
        batch = self._leftover
        if not batch:
            try:
                batch = self.queue.get(timeout=timeout)
            except queue.Empty:
                return []
        deadline = time.monotonic() + self.settings.batch_max_age_s
        limit = self.settings.batch_max_rows
        get = self.queue.get_nowait
        # take what is already waiting; commit as soon as the queue runs dry (low latency,
        # and a broker with a small in-flight window is never kept waiting for acks)
        while len(batch) < limit and time.monotonic() < deadline:
            try:
                batch.extend(get())  # ours alone once taken: paho's thread made a new list for its next read
            except queue.Empty:
                break
        batch, self._leftover = batch[:limit], batch[limit:]
        self._taken += len(batch)
        self._taken_at = batch[-1].received_at
        return batch

    def _commit(self, batch: list[Inbound]) -> None:
        assert self.writer is not None
        failures = 0
        while True:
            try:
                started = time.perf_counter()
                # a worker group: other workers wrote since our last batch; seq trackers and presence reload
                # inside this batch's write transaction (gaps judged on every worker's messages)
                result = self.writer.write(batch, reload=bool(self.settings.worker_group))
                self.last_commit_at = time.time()
                self.commit_seconds.observe(time.perf_counter() - started)
                break
            except (sqlite3.Error, OSError) as exc:  # a full disk, a lock: keep the batch, unacked, and retry
                failures += 1
                self.write_failures += 1
                self.store_failing = repr(exc)
                # loud at once, then on failures 2, 4, 8 ...: a full disk must not drown the log
                if failures & (failures - 1) == 0:
                    log.error("database write failed: nothing is acknowledged until it works again; retrying every "
                              "%.0f s size=%s failures=%s error=%r", WRITE_RETRY_S, len(batch), failures, exc)
                if self._stop.wait(WRITE_RETRY_S):
                    return
        if failures:
            log.warning("database write works again after failures=%s size=%s", failures, len(batch))
            self.store_failing = None
        generation = self.generation
        # a message from an older connection is redelivered on this one and acked then
        self.client.ack_many([msg.mid for msg in batch if msg.qos == 1 and msg.generation == generation])
        self._publish_watermarks(result)
        self._run_hooks(result)

    def _run_hooks(self, result: BatchResult) -> None:
        for hook in self.hooks:
            try:
                hook(result)
            except Exception:  # a hook's bug must not stop ingest; it is logged with its traceback
                log.exception("batch hook failed hook=%r", hook)

    def _publish_watermarks(self, result: BatchResult) -> None:
        for device_id, mark in result.watermarks.items():
            if self.holds.held(device_id):
                continue  # `fleet device-check` plays the hub's watermark for it; the current one goes out on release
            # in the device's own form (firmware_protocol.md 5.1): a CBOR-only firmware needs no JSON parser
            self.client.publish(topic_for(device_id, MessageClass.WATERMARK), mark.payload, qos=1, retain=True)

    def gauges(self) -> dict[str, float | int]:
        """Live figures for the heartbeat and the metrics: queue depth, ingest lag, failed writes."""
        taken = self._taken  # first: paho's thread only ever adds to _queued, so the difference is never negative
        return {"queue_depth": self._queued - taken, "lag_s": self.lag_s(), "write_failures": self.write_failures,
                "last_commit_at": self.last_commit_at}

    def lag_s(self) -> float:
        """How long the oldest message waiting for the writer has waited at most (0 when none waits): it
        arrived after the newest one the writer took."""
        taken = self._taken
        if self._queued == taken:
            return 0.0
        return max(0.0, time.time() - self._taken_at)

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Open the store, connect, and wait until the subscriptions are granted."""
        self._writer_thread = threading.Thread(target=self._writer_main, name="fleet-hub-writer", daemon=True)
        self._writer_thread.start()
        self._store_ready.wait()
        if self._store_error is not None:
            raise self._store_error
        addr = self.settings.address
        self.client.connect_async(addr.host, addr.port, keepalive=self.settings.keepalive)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            self.stop()
            raise HubError(f"hub could not connect and subscribe to {self.settings.broker} within {timeout:.0f} s "
                           f"(is the broker running, are the hub's credentials right?)")
        if self.settings.worker_group:
            self._probe_shared(min(timeout, 3.0))

    def _probe_shared(self, timeout: float) -> None:
        """Refuse to run as a worker on a broker that grants ``$share`` but delivers nothing (AMQTT_NOTES.md #10)."""
        shared = self.settings.shared(self._probe_topic)
        self.client.subscribe(shared, qos=0)
        deadline = time.monotonic() + timeout
        while not self._probe_seen.is_set() and time.monotonic() < deadline:
            self.client.publish(self._probe_topic, b"probe", qos=0)
            self._probe_seen.wait(0.2)
        self.client.unsubscribe(shared)
        if not self._probe_seen.is_set():
            self.stop()
            raise HubError(f"broker {self.settings.broker} does not deliver shared subscriptions ($share/...), so "
                           f"--worker-group cannot work there (the embedded broker is single-worker: run one hub "
                           f"without --worker-group, or move to Mosquitto 2 / EMQX)")

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect and let the writer commit what it holds; whatever is left stays unacked at the broker."""
        self._stop.set()
        if self._writer_thread is not None:
            self._writer_thread.join(timeout)  # its last batch is committed and acked first
        self.client.disconnect()
        self.client.loop_stop()
