"""The hub's configuration side: its own MQTT session and the thread that owns the configuration tables.

paho's network thread only puts births (``d/+/s``), configuration reports (``d/+/n``) and descriptions
(``d/+/x``) on a queue. One thread, ``fleet-hub-config``, owns a database connection: it stores what
arrives, and sends each online device the keys it still lacks (firmware_protocol.md 13):

* after a change (``fleet config set`` stores it; this thread finds it within ``tick_s``), once;
* after every birth, when something is still pending: a device that was offline for days converges on
  its next connect. A birth whose ``cfg`` is below what the device reported before means it lost its
  configuration (a factory reset): everything desired is pending again.

Nothing is sent to an offline device (the change waits in the database, not in a broker session),
and each ConfigSet carries the device's current version, which the device applies at most once.
A birth that names a description the hub does not hold, from a device that supports ``describe``,
gets a ``describe`` command after ``describe_after_s`` (normally the retained description arrives
first).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from hub.config import HubSettings
from hub.device_config import key_name, parse_description, plan
from hub.errors import HubError
from hub.storage import ConfigStore, StorageError, open_database
from hub.transport import PollingClient, hub_session
from hub.writer import BatchResult, reading_rows
from protocol.codec import decode, encode
from protocol.config import ConfigReport, Description, description_hash
from protocol.errors import FleetError, ProtocolError
from protocol.models import Status, StatusState
from protocol.text import inert
from protocol.topics import MessageClass, parse_topic, subscription_for, topic_for

log = logging.getLogger("fleet.hub.config")

HUB_CONFIG_RECEIVES = (MessageClass.STATUS, MessageClass.CONFIG_REPORT, MessageClass.DESCRIPTION)

Submit = Callable[[str, str], Any]
"""(device_id, command name) -> anything: creates a command through the command bridge."""


@dataclass(frozen=True, slots=True)
class RangeFlags:
    """Readings outside a declared range in one committed batch: (device, metric) -> (count, last value, last time)."""

    flags: dict[tuple[str, str], tuple[int, float, float]]


@dataclass(slots=True)
class Link:
    online: bool
    encoding: str = "json"
    desc: str = ""


class ConfigService:
    """Sends desired configuration, stores reports and descriptions; one owner thread."""

    def __init__(self, settings: HubSettings, password: str | None, submit: Submit | None = None,
                 tick_s: float = 0.25, describe_after_s: float = 5.0) -> None:
        self.settings = settings
        self.password = password
        self.submit = submit
        self.tick_s = tick_s
        self.describe_after_s = describe_after_s
        self.links: dict[str, Link] = {}
        self.counters: dict[str, int] = {"sent": 0, "reports": 0, "stale_reports": 0, "descriptions": 0,
                                         "bad_messages": 0, "describe_requests": 0, "out_of_declared_range": 0,
                                         "unresolved_keys": 0}
        self._inbox: queue.Queue[tuple[str, bytes, bool] | RangeFlags] = queue.Queue()
        self._ranges: dict[str, dict[str, tuple[float, float]]] = {}
        """Device -> metric -> declared (low, high); written by the owner thread, read by the writer's hook."""
        self._range_cache: dict[str, dict[str, tuple[float, float]]] = {}
        """Description hash -> its metric ranges (one per kind of device)."""
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._descriptions: dict[str, Description | None] = {}
        self._describe_due: dict[str, float] = {}
        """Device -> when to ask for its description (monotonic), if the hub still lacks it then."""

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe, start the thread."""
        self._client = self._make_client()
        addr = self.settings.address
        self._client.connect_async(addr.host, addr.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise HubError(f"config session could not subscribe on {self.settings.broker}")
        self._thread = threading.Thread(target=self._main, name="fleet-hub-config", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        # a persistent session: reports sent while the hub is down wait for it in the broker
        client = hub_session(PollingClient(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{s.mqtt_client_id}-cfg",
                                           clean_session=False, protocol=mqtt.MQTTv311), s, self.password)

        def on_connect(c: mqtt.Client, u: object, f: object, rc: mqtt.ReasonCode, p: object) -> None:
            if not rc.is_failure:
                c.subscribe([(subscription_for(cls), 1) for cls in HUB_CONFIG_RECEIVES])

        client.on_connect = on_connect
        client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        client.on_message = lambda c, u, msg: self._inbox.put((msg.topic, msg.payload, bool(msg.retain)))
        return client

    # ------------------------------------------------------------------ the owner thread

    def _main(self) -> None:
        try:
            conn = open_database(self.settings.db)
        except StorageError as exc:
            log.error("config service not started: %s", exc)
            return
        store = ConfigStore(conn)
        next_tick = 0.0
        try:
            while not self._stop.is_set():
                try:
                    item = self._inbox.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    item = None
                if isinstance(item, RangeFlags):
                    self._store_flags(store, item)
                elif item is not None:
                    self._handle(store, *item)
                if time.monotonic() >= next_tick:
                    self._tick(store)
                    next_tick = time.monotonic() + self.tick_s
        finally:
            conn.close()

    def _handle(self, store: ConfigStore, topic: str, payload: bytes, retained: bool) -> None:
        try:
            t = parse_topic(topic)
            if t.cls is MessageClass.STATUS and not payload:
                return
            message = decode(t.cls, payload)
        except ProtocolError as exc:
            self.counters["bad_messages"] += 1  # ingest dead-letters bad statuses; reports and descriptions: counted
            log.debug("bad config message topic=%s reason=%s", inert(topic[:80]), exc.reason.value)
            return
        try:
            if isinstance(message, Status):
                self._on_status(store, t.device_id, message)
            elif isinstance(message, ConfigReport):
                self._on_report(store, t.device_id, message)
            elif isinstance(message, Description):
                self._on_description(store, t.device_id, message, payload)
        except StorageError as exc:
            log.warning("config message not stored device_id=%s error=%s", t.device_id, exc)

    # ------------------------------------------------------------------ declared ranges

    def on_batch(self, result: BatchResult) -> None:
        """Ingest hook (the writer's thread, after the commit): count readings outside a declared range.

        The readings are stored like any other; only devices with a description cost more than a dict lookup.
        """
        ranges = self._ranges
        if not ranges:
            return
        flags: dict[tuple[str, str], tuple[int, float, float]] = {}
        for device_id, _, _, _, metric, value, ts, *_ in reading_rows(result.telemetry):
            declared = ranges.get(device_id)
            if declared is None:
                continue
            bounds = declared.get(metric)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                n = flags.get((device_id, metric), (0, 0.0, 0.0))[0]
                flags[(device_id, metric)] = (n + 1, value, ts)
        if flags:
            self._inbox.put(RangeFlags(flags))

    def _store_flags(self, store: ConfigStore, item: RangeFlags) -> None:
        self.counters["out_of_declared_range"] += sum(n for n, _, _ in item.flags.values())
        try:
            store.add_range_flags(item.flags)
        except StorageError as exc:
            log.warning("range flags not stored error=%s", exc)

    def _declare(self, device_id: str, desc_hash: str, description: Description | None) -> None:
        # changed in place: the writer's hook only calls get() on it, which the GIL keeps whole (a copy per
        # birth would cost O(devices) each at a hub start, when every retained birth arrives at once)
        if description is None or not description.metrics:
            self._ranges.pop(device_id, None)
            return
        ranges = self._range_cache.get(desc_hash)
        if ranges is None:
            ranges = self._range_cache[desc_hash] = {m: (lo, hi) for m, (_, lo, hi) in description.metric_ranges().items()}
        self._ranges[device_id] = ranges

    def _description(self, store: ConfigStore, desc_hash: str) -> Description | None:
        if not desc_hash:
            return None
        if desc_hash not in self._descriptions or self._descriptions[desc_hash] is None:
            self._descriptions[desc_hash] = parse_description(store.description_body(desc_hash))
        return self._descriptions[desc_hash]

    def _on_status(self, store: ConfigStore, device_id: str, status: Status) -> None:
        online = status.state is StatusState.ONLINE
        link = self.links.setdefault(device_id, Link(online))
        link.online = online
        if not online:
            return
        link.encoding, link.desc = status.enc, status.desc
        if store.record_birth(device_id, status.desc, status.cfg):
            log.info("device lost its configuration device_id=%s cfg=%s: sending everything desired", device_id,
                     status.cfg)
        description = self._description(store, status.desc)
        self._declare(device_id, status.desc, description)
        if status.desc and description is None and "describe" in status.caps:
            self._describe_due[device_id] = time.monotonic() + self.describe_after_s
        self._send(store, device_id, birth=True)

    def _on_report(self, store: ConfigStore, device_id: str, report: ConfigReport) -> None:
        link = self.links.get(device_id)
        # a report kept for the hub while it was down can come before the device's retained birth
        desc = self._description(store, link.desc if link else store.device_description(device_id)[0])
        applied: dict[str, Any] = {}
        refused: dict[str, str] = {}
        for key, value in report.applied_pairs():
            name = key_name(key, desc)
            if name is not None:
                applied[name] = value
            else:
                self.counters["unresolved_keys"] += 1
        for key, reason in report.refused_pairs():
            name = key_name(key, desc)
            if name is not None:
                refused[name] = reason
            else:
                self.counters["unresolved_keys"] += 1
        # only keys the hub asked for or the description declares: a device cannot grow the table at will
        dev = store.get(device_id)
        known = set(dev.keys if dev else ()) | set(desc.config_keys() if desc else ())
        unasked = [k for k in (*applied, *refused) if k not in known]
        if unasked:
            self.counters["unresolved_keys"] += len(unasked)
            applied = {k: v for k, v in applied.items() if k in known}
            refused = {k: v for k, v in refused.items() if k in known}
        self.counters["reports"] += 1
        if not store.record_report(device_id, report.version, applied, refused, time.time()):
            self.counters["stale_reports"] += 1
            return
        log.info("config report device_id=%s version=%s applied=%s refused=%s", device_id, report.version,
                 len(applied), inert(str(refused)[:200]) if refused else 0)

    def _on_description(self, store: ConfigStore, device_id: str, description: Description, payload: bytes) -> None:
        h = description_hash(payload)
        known = self._description(store, h) is not None  # a read: a hub start receives every retained description
        if not known and store.save_description(h, description.model_dump_json(), device_id, time.time()):
            self.counters["descriptions"] += 1
            log.info("description stored device_id=%s hash=%s metrics=%d commands=%d config=%d", device_id, h,
                     len(description.metrics), len(description.commands), len(description.config) // 2)
        self._descriptions[h] = description
        link = self.links.get(device_id)
        if link is not None and link.desc == h:
            self._describe_due.pop(device_id, None)
            self._declare(device_id, h, description)

    def _tick(self, store: ConfigStore) -> None:
        for device_id in store.unsent():
            self._send(store, device_id, birth=False)
        now = time.monotonic()
        for device_id, due in list(self._describe_due.items()):
            if now < due:
                continue
            del self._describe_due[device_id]
            link = self.links.get(device_id)
            if link is not None and link.online:
                if self._description(store, link.desc) is None and self.submit is not None:
                    self.counters["describe_requests"] += 1
                    try:
                        self.submit(device_id, "describe")
                    except (FleetError, queue.Empty) as exc:
                        log.info("describe request not sent device_id=%s error=%s", device_id, exc)

    def _send(self, store: ConfigStore, device_id: str, birth: bool) -> None:
        link = self.links.get(device_id)
        if link is None or not link.online or self._client is None:
            return  # offline: it waits for the next birth
        dev = store.get(device_id)
        if dev is None:
            return
        try:
            message = plan(dev, self._description(store, link.desc), link.encoding)
        except ValidationError as exc:  # a stored value the wire model refuses: cannot be sent
            log.warning("config not sendable device_id=%s error=%s", device_id, exc.errors(include_url=False)[0]["msg"])
            message = None
        if message is not None:
            self._client.publish(topic_for(device_id, MessageClass.CONFIG_SET), encode(message, link.encoding), qos=1)
            self.counters["sent"] += 1
            log.info("config sent device_id=%s version=%s keys=%d on=%s", device_id, message.version,
                     len(message.set) // 2, "birth" if birth else "change")
        if dev.sent_version < dev.version:
            store.record_sent(device_id, dev.version, time.time())
