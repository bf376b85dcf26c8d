"""Keep-alive is enforced and the last will fires (AMQTT_NOTES.md #2)."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho_helpers import Inbox, close, subscribe
from raw_mqtt import raw_connect, wait_closed

from broker.registry import Role
from support import add_device, connect, load_factor, wait_for


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
    assert wait_closed(sock, timeout=30), "broker never closed a connection silent past its keep-alive"
    elapsed = time.monotonic() - t0
    sock.close()
    # never before 1.5 x keepalive (1 s); a loaded machine may sweep late, so the upper bound scales with it
    assert 1.4 <= elapsed <= 4.0 * load_factor(), f"closed after {elapsed:.2f} s; expected about 1.5 x keepalive"
    assert wait_for(lambda: b"offline" in inbox.payloads("d/mute/s"), timeout=15)

    # the will was retained: a late subscriber sees the device as offline
    late = connect(embedded_broker.port, add_device(registry, "ops-hub", Role.HUB))
    late_inbox = Inbox().attach(late)
    assert subscribe(late, "d/mute/s") == 1
    assert wait_for(lambda: late_inbox.items, timeout=15)
    assert late_inbox.items[0][1:4] == (b"offline", 1, True)
    close(hub, late)


def test_paho_client_with_stopped_loop_is_dropped(embedded_broker, registry):
    hub, inbox = _status_watcher(embedded_broker, registry)
    dev = connect(embedded_broker.port, add_device(registry, "frozen"), keepalive=1, will=("d/frozen/s", b"gone"))
    dev.loop_stop()  # the socket stays open, nothing is sent any more (a hung process)
    assert wait_for(lambda: b"gone" in inbox.payloads("d/frozen/s"), timeout=30)
    dev.socket().close()
    close(hub)


def test_active_client_with_short_keepalive_stays_connected(embedded_broker, registry):
    """A client that only pings, for longer than keepalive x grace, is never dropped."""
    hub, inbox = _status_watcher(embedded_broker, registry)
    drops: list[object] = []
    pongs: list[float] = []
    # keepalive 2: paho pings every 2 s and the broker allows 3 s of silence, so a loaded machine has
    # a whole second of slack (with keepalive 1 it had half a second)
    dev = connect(embedded_broker.port, add_device(registry, "chatty"), keepalive=2, will=("d/chatty/s", b"gone"))
    dev.on_disconnect = lambda *a: drops.append(a)
    dev.on_log = lambda c, u, level, buf: pongs.append(time.monotonic()) if "PINGRESP" in buf else None
    started = time.monotonic()
    # events, not a sleep: two ping round trips take the connection past the 3 s the broker allows silence for
    assert wait_for(lambda: len(pongs) >= 2 or drops, timeout=60), "paho never pinged"
    assert drops == [] and pongs[1] - started > 2 * 1.5
    # marker: a message through the broker after the pings; a will fired before it would have arrived first
    dev.publish("d/chatty/s", b"still-here", qos=1).wait_for_publish(15)
    assert wait_for(lambda: b"still-here" in inbox.payloads("d/chatty/s"), timeout=15)
    assert drops == [] and inbox.payloads("d/chatty/s") == [b"still-here"]
    close(dev, hub)


def test_will_to_a_foreign_topic_is_not_published(embedded_broker, registry):
    """amqtt publishes any will topic unchecked; a device could forge another device's status."""
    hub, inbox = _status_watcher(embedded_broker, registry)
    honest = add_device(registry, "honest")
    creds = add_device(registry, "forger")
    sock, rc = raw_connect(embedded_broker.port, "forger", username="forger", password=creds.password, keepalive=1,
                           will=("d/honest/s", b"offline"))
    assert rc == 0
    assert wait_closed(sock, timeout=30)
    sock.close()
    # marker: honest's own will, fired by the same watchdog after the forger's: once it is here, a
    # forged will would have been too
    sock, rc = raw_connect(embedded_broker.port, "honest", username="honest", password=honest.password,
                           keepalive=1, will=("d/honest/s", b"honest-will"))
    assert rc == 0
    assert wait_closed(sock, timeout=30)
    sock.close()
    assert wait_for(lambda: b"honest-will" in inbox.payloads("d/honest/s"), timeout=15)
    assert inbox.payloads("d/honest/s") == [b"honest-will"]
    close(hub)
