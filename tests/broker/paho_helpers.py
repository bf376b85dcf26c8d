"""Small paho helpers for the broker tests: subscribe and wait for the SUBACK, collect messages."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt


def subscribe(client: mqtt.Client, topic: str, qos: int = 1, timeout: float = 5.0) -> int:
    """Subscribe and wait for the SUBACK; returns the granted QoS or 0x80 for a refusal."""
    done = threading.Event()
    codes: list[int] = []

    def on_subscribe(c, userdata, mid, reason_codes, properties):  # type: ignore[no-untyped-def]
        # one subscription at a time per client in these tests, so the next SUBACK is ours
        codes.extend(rc.value for rc in reason_codes)
        done.set()

    previous = client.on_subscribe
    client.on_subscribe = on_subscribe
    try:
        result, _mid = client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert done.wait(timeout), f"no SUBACK for {topic}"
    finally:
        client.on_subscribe = previous
    return codes[0]


@dataclass
class Inbox:
    """Messages a client received, as (topic, payload, qos, retain, dup)."""

    items: list[tuple[str, bytes, int, bool, bool]] = field(default_factory=list)

    def attach(self, client: mqtt.Client) -> Inbox:
        client.on_message = lambda c, u, m: self.items.append((m.topic, m.payload, m.qos, bool(m.retain), bool(m.dup)))
        return self

    def payloads(self, topic: str | None = None) -> list[bytes]:
        return [p for t, p, *_ in list(self.items) if topic is None or t == topic]

    def topics(self) -> set[str]:
        return {t for t, *_ in list(self.items)}


def close(*clients: mqtt.Client) -> None:
    """Disconnect cleanly and stop the network loops."""
    for c in clients:
        c.disconnect()
        c.loop_stop()


def connect_with_inbox(port: int, username: str, password: str, *, clean: bool = True,
                       timeout: float = 5.0) -> tuple[mqtt.Client, Inbox]:
    """A connected client whose inbox is attached *before* CONNECT, so nothing sent at once is missed."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=username, clean_session=clean,
                         protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)
    inbox = Inbox().attach(client)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(timeout):
        close(client)
        raise ConnectionRefusedError(f"{username} could not connect")
    return client, inbox
