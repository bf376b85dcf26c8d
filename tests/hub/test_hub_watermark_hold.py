"""An operator can hold a device's watermarks (what `fleet device-check` does with a hub running).

Seen from outside: a device publishes through the broker, the hub stores it, and a hub-role
observer subscribed to every ``d/+/w`` records each watermark in the order the hub published
them. While a device is held, its messages are stored but no watermark goes out for it: a
second device's message, sent afterwards, is the marker (its watermark comes from the same hub
session, so the held device's would have arrived first). Release, or a lease that runs out,
brings the held device's current watermark at once.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from broker.registry import Role
from hub.ops_client import HubUnreachable, OpsClient
from hub_helpers import birth, publish, publish_seqs, stop_client, stored_messages
from protocol.codec import decode, encode
from protocol.models import Watermark
from protocol.topics import MessageClass, parse_topic
from support import add_device, connect, wait_for


class Observer:
    """A hub-role client recording (device_id, watermark) of every live watermark on ``d/+/w``."""

    def __init__(self, port: int, registry) -> None:  # type: ignore[no-untyped-def]
        self.marks: list[tuple[str, Watermark]] = []
        self._lock = threading.Lock()
        self.client = connect(port, add_device(registry, "observer", Role.HUB))
        self.client.on_message = self._on_message
        granted = threading.Event()
        self.client.on_subscribe = lambda *a: granted.set()
        self.client.subscribe("d/+/w", qos=1)
        assert granted.wait(5), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            return  # the broker's copy from before the subscription
        mark = decode(MessageClass.WATERMARK, msg.payload)
        assert isinstance(mark, Watermark)
        with self._lock:
            self.marks.append((parse_topic(msg.topic).device_id, mark))

    def of(self, device_id: str) -> list[int]:
        with self._lock:
            return [m.seq for d, m in self.marks if d == device_id]

    def saw(self, device_id: str, seq: int, timeout: float = 10.0) -> bool:
        return wait_for(lambda: seq in self.of(device_id), timeout)


def online(port: int, registry, device_id: str) -> mqtt.Client:  # type: ignore[no-untyped-def]
    client = connect(port, add_device(registry, device_id))
    publish(client, device_id, MessageClass.STATUS, encode(birth(boot=1), "json"), retain=True).wait_for_publish(5)
    return client


def ops(port: int, registry, name: str = "alice", role: Role = Role.OPERATOR) -> OpsClient:  # type: ignore[no-untyped-def]
    creds = add_device(registry, name, role)
    return OpsClient(f"mqtt://127.0.0.1:{port}", creds.username, creds.password).__enter__()


def test_a_held_device_is_stored_without_watermarks_until_released(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    port = embedded_broker.port
    seen = Observer(port, registry)
    held, marker = online(port, registry, "held-1"), online(port, registry, "free-1")
    op = ops(port, registry)
    try:
        assert seen.saw("held-1", 0) and seen.saw("free-1", 0)  # the births' answers
        resp = op.hold_watermarks("held-1", lease_s=60)
        assert resp.ok and resp.held_until > 0, resp
        publish_seqs(held, "held-1", [1, 2])
        assert wait_for(lambda: stored_messages(db_path) == 2)  # stored exactly as always
        publish_seqs(marker, "free-1", [1])
        assert seen.saw("free-1", 1)  # the marker: anything the hub published before it has arrived
        assert seen.of("held-1") == [0]
        assert op.release_watermarks("held-1").ok
        assert seen.saw("held-1", 2)  # at once, without a new message from the device
        publish_seqs(held, "held-1", [3])
        assert seen.saw("held-1", 3)  # and as always afterwards
    finally:
        op.close()
        for c in (held, marker, seen.client):
            stop_client(c)


def test_a_lease_that_is_not_renewed_releases_the_device_by_itself(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    port = embedded_broker.port
    seen = Observer(port, registry)
    held = online(port, registry, "held-2")
    op = ops(port, registry, "checker", Role.HUB)
    try:
        assert seen.saw("held-2", 0)
        assert op.hold_watermarks("held-2", lease_s=2).ok
        publish_seqs(held, "held-2", [1])
        assert wait_for(lambda: stored_messages(db_path) == 1)
        assert seen.saw("held-2", 1, timeout=15)  # the checker "died": no renewal, no release
        assert not op.release_watermarks("held-2").ok  # nothing left to release
    finally:
        op.close()
        for c in (held, seen.client):
            stop_client(c)


def test_only_hub_and_operator_logins_may_hold_and_only_known_devices(embedded_broker, registry, start_hub):
    start_hub(embedded_broker.port)
    port = embedded_broker.port
    device = online(port, registry, "held-3")
    op = ops(port, registry, "bob", Role.OPERATOR)
    try:
        unknown = op.hold_watermarks("nobody-9", lease_s=5)
        assert not unknown.ok and "unknown device" in unknown.error
        with pytest.raises(HubUnreachable):  # a device login cannot even reach the operator topics
            ops(port, registry, "held-4", Role.DEVICE).hold_watermarks("held-3", lease_s=5, answer_timeout=2)
    finally:
        op.close()
        stop_client(device)
