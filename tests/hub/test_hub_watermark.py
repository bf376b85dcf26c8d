"""The watermark never sticks (firmware_protocol.md 5.1, 5.4, 7.1), and speaks the device's form.

A device connects with paho, subscribes to its own ``w`` like a firmware would, and watches
what the hub publishes there while it sends telemetry: the watermark moves past a dead-lettered
message and past seqs the device declared dropped, reports a hole with ``next``/``max``, answers
a birth, and is CBOR for a device whose birth says ``enc: cbor``. On the hub before contract v2
the watermark stayed below the dead letter and the dropped seqs for the rest of the boot, and was
always JSON.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from hub.storage import open_database as connect_db
from hub.storage.queries import deadletters as query_deadletters, gaps as query_gaps
from hub_helpers import NOW_MS, birth, publish, publish_seqs, scalar, stop_client, telemetry
from protocol.codec import decode, encode
from protocol.models import Reading, Status, Telemetry, Watermark
from protocol.topics import MessageClass, topic_for
from support import add_device, connect, wait_for


class Device:
    """A device's MQTT client that records every watermark it receives (payload, RETAIN flag)."""

    def __init__(self, port: int, registry, device_id: str) -> None:  # type: ignore[no-untyped-def]
        self.device_id = device_id
        self.marks: list[tuple[bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = connect(port, add_device(registry, device_id))
        self.client.on_message = self._on_message
        granted = threading.Event()
        self.client.on_subscribe = lambda *a: granted.set()
        self.client.subscribe(topic_for(device_id, MessageClass.WATERMARK), qos=1)
        assert granted.wait(5), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.marks.append((msg.payload, bool(msg.retain)))

    def latest(self) -> Watermark | None:
        with self._lock:
            if not self.marks:
                return None
            payload = self.marks[-1][0]
        mark = decode(MessageClass.WATERMARK, payload)
        assert isinstance(mark, Watermark)
        return mark

    def send(self, message: Telemetry, encoding: str = "json") -> None:
        publish(self.client, self.device_id, MessageClass.TELEMETRY, encode(message, encoding)).wait_for_publish(5)

    def birth(self, status: Status, encoding: str = "json") -> None:
        publish(self.client, self.device_id, MessageClass.STATUS, encode(status, encoding),
                retain=True).wait_for_publish(5)

    def waits_for(self, boot: int, seq: int, nxt: int = 0, top: int = 0, timeout: float = 10.0) -> bool:
        def seen() -> bool:
            m = self.latest()
            return m is not None and (m.boot, m.seq, m.next, m.max) == (boot, seq, nxt, top)
        return wait_for(seen, timeout)


def out_of_range(seq: int, boot: int = 1) -> bytes:
    """A telemetry payload the hub refuses (out_of_range) but whose boot and seq it can read."""
    bad = Telemetry.model_construct(boot=boot, seq=seq, ts=NOW_MS(), dropped=0,
                                    readings=[Reading.model_construct(dt=0, metric="temperature", value=999.0)])
    return encode(bad, "json", validate=False)


def test_a_dead_lettered_message_does_not_stop_the_watermark(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    dev = Device(embedded_broker.port, registry, "wm-dead")
    try:
        dev.birth(birth(boot=1))
        dev.send(telemetry(1))
        assert dev.waits_for(1, 1)
        publish(dev.client, dev.device_id, MessageClass.TELEMETRY, out_of_range(2)).wait_for_publish(5)
        dev.send(telemetry(3))
        assert dev.waits_for(1, 3), f"watermark stuck at {dev.latest()}"
        # a re-send of the refused message is a duplicate, not a second dead letter
        publish(dev.client, dev.device_id, MessageClass.TELEMETRY, out_of_range(2)).wait_for_publish(5)
        dev.send(telemetry(4))
        assert dev.waits_for(1, 4)
        conn = connect_db(db_path)
        try:
            dead = query_deadletters(conn)
            assert [(d["reason"], d["device_id"]) for d in dead] == [("out_of_range", "wm-dead")]
            assert conn.execute("SELECT boot, seq FROM deadletters").fetchall() == [(1, 2)]
            assert query_gaps(conn, "wm-dead", open_only=True) == []
        finally:
            conn.close()
        assert scalar(db_path, "SELECT COUNT(*) FROM messages WHERE device_id = 'wm-dead'") == 3
    finally:
        stop_client(dev.client)


def test_seqs_the_device_declares_dropped_release_the_watermark(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    dev = Device(embedded_broker.port, registry, "wm-drop")
    try:
        dev.birth(birth(boot=1))
        dev.send(telemetry(1))
        assert dev.waits_for(1, 1)
        dev.send(telemetry(6))  # 2..5 fell out of a full buffer before they were ever sent
        assert dev.waits_for(1, 1, 6, 6)  # the hole, reported: the device would re-send 2..5 if it had them
        dev.send(telemetry(7).model_copy(update={"dropped": 5}))
        assert dev.waits_for(1, 7), f"watermark stuck at {dev.latest()}"
        conn = connect_db(db_path)
        try:
            (gap,) = query_gaps(conn, "wm-drop")
            assert (gap["from_seq"], gap["to_seq"], gap["missing"]) == (2, 5, 4) and gap["dropped_at"] is not None
        finally:
            conn.close()
        # a copy that was still on its way is stored after all and leaves the dropped gap
        dev.send(telemetry(3))
        assert wait_for(lambda: scalar(db_path, "SELECT SUM(missing) FROM gaps WHERE device_id = 'wm-drop'") == 3)
        assert dev.latest() is not None and dev.latest().seq == 7  # type: ignore[union-attr]
    finally:
        stop_client(dev.client)


def test_a_boot_first_seen_at_seq_10_records_the_leading_gap(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    dev = Device(embedded_broker.port, registry, "wm-lead")
    try:
        dev.birth(birth(boot=4))
        dev.send(telemetry(10, boot=4))
        assert dev.waits_for(4, 0, 10, 10)
        conn = connect_db(db_path)
        try:
            assert [(g["from_seq"], g["to_seq"]) for g in query_gaps(conn, "wm-lead", open_only=True)] == [(1, 9)]
        finally:
            conn.close()
        publish_seqs(dev.client, dev.device_id, range(1, 10), boot=4)
        assert dev.waits_for(4, 10)
    finally:
        stop_client(dev.client)


def test_a_cbor_device_gets_its_watermark_in_cbor_and_a_json_device_in_json(embedded_broker, registry, db_path,
                                                                            start_hub):
    start_hub(embedded_broker.port)
    cbor_dev = Device(embedded_broker.port, registry, "wm-cbor")
    json_dev = Device(embedded_broker.port, registry, "wm-json")
    try:
        cbor_dev.birth(Status(state="online", boot=2, enc="cbor"), "cbor")
        json_dev.birth(Status(state="online", boot=2, enc="json"))
        cbor_dev.send(telemetry(1, boot=2), "cbor")
        json_dev.send(telemetry(1, boot=2))
        assert cbor_dev.waits_for(2, 1) and json_dev.waits_for(2, 1)
        assert all(payload[:1] != b"{" for payload, _ in cbor_dev.marks), cbor_dev.marks
        assert all(payload[:1] == b"{" for payload, _ in json_dev.marks), json_dev.marks
    finally:
        stop_client(cbor_dev.client)
        stop_client(json_dev.client)


def test_the_hub_answers_a_birth_with_a_live_watermark_carrying_its_clock(embedded_broker, registry, db_path,
                                                                          start_hub):
    start_hub(embedded_broker.port)
    dev = Device(embedded_broker.port, registry, "wm-birth")
    try:
        before = NOW_MS()
        dev.birth(birth(boot=9))
        assert dev.waits_for(9, 0)  # nothing of boot 9 yet: the answer still comes
        payload, retained = dev.marks[-1]
        mark = decode(MessageClass.WATERMARK, payload)
        assert not retained and before - 1000 <= mark.ts <= NOW_MS() + 1000  # type: ignore[union-attr]
    finally:
        stop_client(dev.client)
