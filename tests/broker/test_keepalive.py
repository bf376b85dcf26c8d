"""Keep-alive is enforced and the last will fires (AMQTT_NOTES.md #2)."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho_helpers import Inbox, close, subscribe
from raw_mqtt import raw_connect, wait_closed

from broker.registry import Role
from support import add_device, connect, wait_for


def _status_watcher(embedded_broker, registry) -> tuple[mqtt.Client, Inbox]:  # type: ignore[no-untyped-def]
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    inbox = Inbox().attach(hub)
    assert subscribe(hub, "d/+/s") == 1
    return hub, inbox


def test_silent_raw_client_is_dropped_after_grace_and_its_will_is_published(embedded_broker, registry):
    hub, inbox = _status_watcher(embedded_broker, registry)
    creds = add_device(registry, "mute")
    sock, rc = raw_connect(embedded_broker.port, "mute", username="mute", password=creds.password, keepalive=1,
                           will=("d/mute/s", b"offline"))
    assert rc == 0
    t0 = time.monotonic()
    assert wait_closed(sock, timeout=6), "broker never closed a connection silent past its keep-alive"
    elapsed = time.monotonic() - t0
    sock.close()
    assert 1.4 <= elapsed <= 4.0, f"closed after {elapsed:.2f} s; expected about 1.5 x keepalive (1 s)"
    assert wait_for(lambda: b"offline" in inbox.payloads("d/mute/s"), timeout=3)

    # the will was retained: a late subscriber sees the device as offline
    late = connect(embedded_broker.port, add_device(registry, "ops-hub", Role.HUB))
    late_inbox = Inbox().attach(late)
    assert subscribe(late, "d/mute/s") == 1
    assert wait_for(lambda: late_inbox.items, timeout=3)
    assert late_inbox.items[0][1:4] == (b"offline", 1, True)
    close(hub, late)


def test_paho_client_with_stopped_loop_is_dropped(embedded_broker, registry):
    hub, inbox = _status_watcher(embedded_broker, registry)
    dev = connect(embedded_broker.port, add_device(registry, "frozen"), keepalive=1, will=("d/frozen/s", b"gone"))
    dev.loop_stop()  # the socket stays open, nothing is sent any more (a hung process)
    assert wait_for(lambda: b"gone" in inbox.payloads("d/frozen/s"), timeout=5)
    dev.socket().close()
    close(hub)


def test_active_client_with_short_keepalive_stays_connected(embedded_broker, registry):
    hub, inbox = _status_watcher(embedded_broker, registry)
    drops: list[object] = []
    dev = connect(embedded_broker.port, add_device(registry, "chatty"), keepalive=1, will=("d/chatty/s", b"gone"))
    dev.on_disconnect = lambda *a: drops.append(a)
    wait_for(lambda: drops, timeout=3.5)  # paho pings every second
    assert drops == [] and b"gone" not in inbox.payloads()
    close(dev, hub)


def test_will_to_a_foreign_topic_is_not_published(embedded_broker, registry):
    """amqtt publishes any will topic unchecked; a device could forge another device's status."""
    hub, inbox = _status_watcher(embedded_broker, registry)
    add_device(registry, "honest")
    creds = add_device(registry, "forger")
    sock, rc = raw_connect(embedded_broker.port, "forger", username="forger", password=creds.password, keepalive=1,
                           will=("d/honest/s", b"offline"))
    assert rc == 0
    assert wait_closed(sock, timeout=6)
    sock.close()
    wait_for(lambda: False, timeout=0.5)
    assert inbox.payloads("d/honest/s") == []
    close(hub)
