"""What the embedded broker promises about delivery, against amqtt's defaults.

AMQTT_NOTES.md #1 (acknowledged burst lost at DISCONNECT), #3 (offline queue with RETAIN=1, QoS 0
queued as QoS 1), #4 (unacknowledged QoS 1 not redelivered after reconnect), #11 (no size limit).
"""

from __future__ import annotations

import logging
import socket
import struct
import subprocess

import paho.mqtt.client as mqtt
import pytest
from paho_helpers import Inbox, close, subscribe

from broker.registry import Role
from support import Creds, add_device, connect, session_state, wait_for


def _hub(embedded_broker, registry, topic: str = "d/#") -> tuple[mqtt.Client, Inbox]:  # type: ignore[no-untyped-def]
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    inbox = Inbox().attach(hub)
    assert subscribe(hub, topic) == 1
    return hub, inbox


@pytest.mark.parametrize("publisher", ["paho", "mosquitto_pub"])
def test_acknowledged_burst_is_delivered_after_disconnect(embedded_broker, registry, publisher):
    """2000 QoS 1 messages, all PUBACKed, then DISCONNECT at once: the hub gets every one (#1)."""
    hub, inbox = _hub(embedded_broker, registry, "d/+/t")
    creds = add_device(registry, "burst")
    registry.set_quota("burst", msgs_per_s=0, bytes_per_s=0)  # far above a device's default quota
    n = 2000
    if publisher == "paho":
        dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="burst", protocol=mqtt.MQTTv311)
        dev.username_pw_set(creds.username, creds.password)
        dev.max_inflight_messages_set(0)  # unlimited: all 2000 in flight, routing lags behind the acks
        dev.connect("127.0.0.1", embedded_broker.port)
        dev.loop_start()
        infos = [dev.publish("d/burst/t", str(i).encode(), qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
        close(dev)
    else:
        lines = "".join(f"{i}\n" for i in range(n))
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(embedded_broker.port), "-i", "burst",
                        "-u", "burst", "-P", creds.password, "-q", "1", "-t", "d/burst/t", "-l"],
                       input=lines.encode(), check=True, timeout=30)
    expected = {str(i).encode() for i in range(n)}
    assert wait_for(lambda: set(inbox.payloads()) >= expected, timeout=15), \
        f"hub got {len(set(inbox.payloads()))} of {n} acknowledged messages"
    close(hub)


def test_offline_persistent_device_gets_queued_commands_without_retain_flag(embedded_broker, registry):
    """Commands published while a persistent device is away arrive on reconnect, RETAIN=0, QoS 1 (#3, #5)."""
    creds = add_device(registry, "sleepy")
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    dev = connect(embedded_broker.port, creds, clean=False)
    assert subscribe(dev, "d/sleepy/c") == 1
    close(dev)
    # the broker has taken the DISCONNECT: what the hub sends now is queued for the offline session
    assert wait_for(lambda: session_state(embedded_broker, "sleepy") == "disconnected", timeout=15)
    for i in range(3):
        hub.publish("d/sleepy/c", f"cmd-{i}".encode(), qos=1).wait_for_publish(5)
    hub.publish("d/sleepy/c", b"qos0-while-away", qos=0).wait_for_publish(5)

    inbox = Inbox()
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sleepy", clean_session=False, protocol=mqtt.MQTTv311)
    dev.username_pw_set(creds.username, creds.password)
    inbox.attach(dev)
    present: list[bool] = []
    dev.on_connect = lambda c, u, flags, rc, p: present.append(flags.session_present)
    dev.connect("127.0.0.1", embedded_broker.port)
    dev.loop_start()
    assert wait_for(lambda: len(inbox.items) >= 3, timeout=15), inbox.items
    # marker: a command sent now arrives after everything queued, so the QoS 0 one had its chance
    hub.publish("d/sleepy/c", b"marker", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"marker" in inbox.payloads(), timeout=15), inbox.items
    assert present == [True]
    assert [(t, p, qos, retain) for t, p, qos, retain, _dup in inbox.items] == [
        ("d/sleepy/c", f"cmd-{i}".encode(), 1, False) for i in range(3)
    ] + [("d/sleepy/c", b"marker", 1, False)]
    close(dev, hub)


def _kill_socket(client: mqtt.Client) -> None:
    """Drop the TCP connection with a RST and no DISCONNECT, like a SIGKILLed process."""
    client.loop_stop()
    sock = client.socket()
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _manual_ack_hub(port: int, creds: Creds, inbox: Inbox, ack) -> mqtt.Client:  # type: ignore[no-untyped-def]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hub-1", clean_session=False,
                         protocol=mqtt.MQTTv311, manual_ack=True)
    client.username_pw_set(creds.username, creds.password)

    def on_message(c, u, m):  # type: ignore[no-untyped-def]
        inbox.items.append((m.topic, m.payload, m.qos, bool(m.retain), bool(m.dup)))
        if ack(m.payload):
            c.ack(m.mid, m.qos)

    client.on_message = on_message
    connected: list[bool] = []
    client.on_connect = lambda c, u, f, rc, p: connected.append(not rc.is_failure)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert wait_for(lambda: connected == [True], timeout=5)
    return client


def test_unacknowledged_messages_are_redelivered_to_a_persistent_session(embedded_broker, registry):
    """A hub that dies before acking gets those messages again when it comes back (#4)."""
    hub_creds = add_device(registry, "hub", Role.HUB)
    first = Inbox()
    hub = _manual_ack_hub(embedded_broker.port, hub_creds, first, ack=lambda p: int(p) % 2 == 0)
    assert subscribe(hub, "d/+/t") == 1
    dev = connect(embedded_broker.port, add_device(registry, "dev-r"))
    for i in range(10):
        dev.publish("d/dev-r/t", str(i).encode(), qos=1).wait_for_publish(5)
    assert wait_for(lambda: len(first.items) >= 10, timeout=15)
    # marker: the broker answers a PUBLISH sent after the even PUBACKs only once it has read them
    hub.publish("d/dev-r/c", b"marker", qos=1).wait_for_publish(15)
    _kill_socket(hub)

    second = Inbox()
    hub = _manual_ack_hub(embedded_broker.port, hub_creds, second, ack=lambda p: True)
    odd = {str(i).encode() for i in range(1, 10, 2)}
    assert wait_for(lambda: set(second.payloads()) >= odd, timeout=8), f"redelivered: {second.payloads()}"
    dev.publish("d/dev-r/t", b"after", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"after" in second.payloads(), timeout=5)
    assert all(dup for _t, p, _q, _r, dup in second.items if p in odd)
    assert not set(second.payloads()) & {str(i).encode() for i in range(0, 10, 2)}, "acked messages came back"
    close(hub, dev)


def test_oversized_publish_is_dropped_and_logged(embedded_broker, registry, caplog):
    """A payload over max_payload_bytes is not routed; messages around it are (#11)."""
    hub, inbox = _hub(embedded_broker, registry, "d/+/t")
    dev = connect(embedded_broker.port, add_device(registry, "big"))
    limit = embedded_broker.settings.max_payload_bytes
    with caplog.at_level(logging.WARNING, logger="fleet.broker.routing"):
        for payload in (b"before", b"x" * (limit + 1), b"x" * limit, b"after"):
            dev.publish("d/big/t", payload, qos=1).wait_for_publish(5)
        assert wait_for(lambda: b"after" in inbox.payloads(), timeout=5)
    assert inbox.payloads() == [b"before", b"x" * limit, b"after"]
    assert dev.is_connected()
    assert any("reason=oversized" in r.getMessage() and "client_id=big" in r.getMessage()
               and f"size={limit + 1}" in r.getMessage() for r in caplog.records)
    close(dev, hub)


def test_services_may_publish_beyond_the_device_limit(embedded_broker, registry):
    """An operator's request naming a thousand devices is larger than any device message may be."""
    hub, inbox = _hub(embedded_broker, registry, "fleet/ops/+/req")
    ops = connect(embedded_broker.port, add_device(registry, "op-big", Role.OPERATOR), client_id="op-big-1")
    big = b"x" * (embedded_broker.settings.max_payload_bytes * 4)
    ops.publish("fleet/ops/op-big/req", big, qos=1).wait_for_publish(5)
    assert wait_for(lambda: big in inbox.payloads(), timeout=5)
    close(ops, hub)


def test_huge_packet_closes_the_connection_before_it_is_read(embedded_broker, registry):
    """A PUBLISH over max_packet_bytes is never buffered: the broker hangs up (#11)."""
    hub, inbox = _hub(embedded_broker, registry, "d/+/t")
    dev = connect(embedded_broker.port, add_device(registry, "huge"))
    gone: list[object] = []
    dev.on_disconnect = lambda *a: gone.append(a)
    dev.publish("d/huge/t", b"x" * (embedded_broker.settings.max_packet_bytes + 1), qos=1)
    assert wait_for(lambda: gone, timeout=5)
    assert inbox.items == []
    close(dev, hub)


def test_persistent_session_is_not_inherited_by_another_principal(embedded_broker, registry):
    """Another principal reusing a client id starts afresh: no queued messages, no subscriptions."""
    hub_creds = add_device(registry, "hub", Role.HUB)
    ops_creds = add_device(registry, "ops", Role.OPERATOR)
    hub = connect(embedded_broker.port, hub_creds, client_id="shared-id", clean=False)
    assert subscribe(hub, "d/+/t") == 1
    close(hub)
    dev = connect(embedded_broker.port, add_device(registry, "dev-s"))
    dev.publish("d/dev-s/t", b"for-the-hub", qos=1).wait_for_publish(5)

    ops = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="shared-id", clean_session=False,
                      protocol=mqtt.MQTTv311)
    ops.username_pw_set(ops_creds.username, ops_creds.password)
    inbox = Inbox().attach(ops)
    present: list[bool] = []
    ops.on_connect = lambda c, u, flags, rc, p: present.append(flags.session_present)
    ops.connect("127.0.0.1", embedded_broker.port)
    ops.loop_start()
    assert wait_for(lambda: present, timeout=15)
    # marker: another hub gets "later"; by then the broker has routed it to every subscriber it has
    watcher = connect(embedded_broker.port, add_device(registry, "hub-2", Role.HUB))
    seen = Inbox().attach(watcher)
    assert subscribe(watcher, "d/+/t") == 1
    dev.publish("d/dev-s/t", b"later", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"later" in seen.payloads(), timeout=15)
    # ... and ops' own round trip comes back after anything the broker queued for it before
    ops.publish("fleet/ops/ops/req", b"marker", qos=1).wait_for_publish(15)
    assert present == [False] and inbox.items == []
    close(ops, dev, watcher)


def test_a_burst_to_one_subscriber_arrives_whole_and_in_order(embedded_broker, registry):
    """Packets written in one loop pass leave in one send() (broker/writer.py); a raw reader must
    still parse every PUBLISH whole, in the publisher's order, each id acknowledged once."""
    from raw_mqtt import ack_packet, parse_publish, raw_connect, read_packet, subscribe_packet

    hub = add_device(registry, "hub", Role.HUB)
    sock, rc = raw_connect(embedded_broker.port, "hub-raw", username=hub.username, password=hub.password)
    assert rc == 0
    sock.sendall(subscribe_packet("d/+/t", qos=1))
    assert read_packet(sock)[0] == 9  # SUBACK: subscribed before the burst starts
    creds = add_device(registry, "burst")
    registry.set_quota("burst", msgs_per_s=0, bytes_per_s=0)
    n = 3000
    lines = "".join(f"{i}\n" for i in range(n))
    pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(embedded_broker.port), "-i", "burst",
                            "-u", "burst", "-P", creds.password, "-q", "1", "-t", "d/burst/t", "-l"],
                           stdin=subprocess.PIPE)
    pub.communicate(lines.encode(), timeout=60)
    got: list[int] = []
    sock.settimeout(30)
    while len(got) < n:
        ptype, flags, body = read_packet(sock)
        assert ptype == 3, f"expected PUBLISH, got packet type {ptype} after {len(got)} messages"
        topic, packet_id, payload = parse_publish(flags, body)
        assert topic == "d/burst/t" and packet_id is not None
        got.append(int(payload))
        sock.sendall(ack_packet("puback", packet_id))
    assert got == list(range(n))
    sock.close()
