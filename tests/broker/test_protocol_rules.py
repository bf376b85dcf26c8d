"""MQTT 3.1.1 rules the embedded broker enforces, checked with raw sockets (paho would refuse to send these).

Closing at once means: within a couple of seconds while the keep-alive is 60 s, and nothing sent
after the bad packet in the same write is answered or routed.
"""

from __future__ import annotations

import logging
import socket
import struct
import time

import pytest
from paho_helpers import Inbox, close, subscribe
from raw_mqtt import (
    DISCONNECT,
    PINGREQ,
    ack_packet,
    connect_packet,
    packet,
    parse_publish,
    publish_packet,
    raw_session,
    read_packet,
    subscribe_packet,
)

from broker.registry import Role
from support import add_device, connect, load_factor, wait_for

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 3, 4, 5, 6, 7, 9


def _on_loop(fn):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        return fn()
    return run


def counters(embedded_broker) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return embedded_broker.call(_on_loop(embedded_broker.broker.counters))


def _hub(embedded_broker, registry, topic: str = "d/#"):  # type: ignore[no-untyped-def]
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    inbox = Inbox().attach(hub)
    assert subscribe(hub, topic) == 1
    return hub, inbox


def _packets_until_closed(sock: socket.socket, timeout: float) -> tuple[list[tuple[int, int, bytes]], bool]:
    """Every packet the broker sends until it closes ``sock`` (True) or ``timeout`` passes (False)."""
    sock.settimeout(timeout)
    got = []
    try:
        while True:
            got.append(read_packet(sock))
    except TimeoutError:
        return got, False
    except (ConnectionError, OSError):
        return got, True


def _marker(embedded_broker, registry, inbox: Inbox) -> None:  # type: ignore[no-untyped-def]
    """Publish a marker from a well-behaved device and wait until the hub has it (all before it is routed)."""
    creds = add_device(registry, f"marker-{time.monotonic_ns() % 10**9}")
    dev = connect(embedded_broker.port, creds)
    dev.publish(f"d/{creds.username}/t", b"marker", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"marker" in inbox.payloads(), timeout=10)
    close(dev)


def test_wildcard_topic_in_publish_closes_the_connection_and_the_rest_is_never_parsed(embedded_broker, registry):
    hub, inbox = _hub(embedded_broker, registry)
    creds = add_device(registry, "smuggler")
    sock, _, rc = raw_session(embedded_broker.port, "smuggler", username="smuggler", password=creds.password)
    assert rc == 0
    # one write: the bad PUBLISH, then a PUBLISH and a PINGREQ that must never run
    sock.sendall(publish_packet("d/smuggler/+", b"bad", qos=1, packet_id=1)
                 + publish_packet("d/smuggler/t", b"smuggled", qos=1, packet_id=2) + PINGREQ)
    started = time.monotonic()
    answers, closed = _packets_until_closed(sock, timeout=30)
    # "at once": well before any keep-alive (60 s) would close it, allowing for a loaded machine
    assert closed and time.monotonic() - started < 3 * load_factor(), "connection not closed at once"
    assert answers == [], f"the broker answered packets after the violation: {answers}"
    _marker(embedded_broker, registry, inbox)
    assert b"smuggled" not in inbox.payloads() and b"bad" not in inbox.payloads()
    assert counters(embedded_broker)["protocol_violations"] == 1
    sock.close()
    close(hub)


MALFORMED = {
    "publish_qos_3": publish_packet("d/bad/t", b"x", qos=3),
    "publish_topic_not_utf8": publish_packet(b"d/bad/\xff\xfe", b"x", qos=1),
    "publish_topic_with_nul": publish_packet("d/bad/t\x00", b"x", qos=0),
    "publish_empty_topic": publish_packet("", b"x", qos=0),
    "publish_topic_longer_than_packet": packet(0x32, b"\x00\x50d/bad/t"),
    "publish_qos0_with_dup": publish_packet("d/bad/t", b"x", qos=0, dup=True),
    "subscribe_wrong_flags": subscribe_packet("d/bad/c", flags=0),
    "subscribe_qos_3": subscribe_packet("d/bad/c", qos=3),
    "subscribe_without_filters": packet(0x82, struct.pack("!H", 1)),
    "reserved_type_0": packet(0x00, b""),
    "reserved_type_15": packet(0xF0, b""),
    "second_connect": connect_packet("bad"),
    "suback_from_client": packet(0x90, b"\x00\x01\x00"),
    "pingreq_with_body": packet(0xC0, b"\x00"),
    "puback_too_long": packet(0x40, b"\x00\x01\x00"),
    "remaining_length_5_bytes": b"\x30\xff\xff\xff\xff\x01",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_packet_closes_the_connection_at_once(embedded_broker, registry, name):
    creds = add_device(registry, "bad")
    sock, _, rc = raw_session(embedded_broker.port, "bad", username="bad", password=creds.password, keepalive=60)
    assert rc == 0
    sock.sendall(MALFORMED[name] + PINGREQ)
    started = time.monotonic()
    answers, closed = _packets_until_closed(sock, timeout=30)
    assert closed and time.monotonic() - started < 3 * load_factor(), f"{name}: connection left open"
    assert answers == [], f"{name}: packets after the violation were answered: {answers}"
    sock.close()


@pytest.mark.parametrize("version", ["mqtt5", "mqtt31"])
def test_other_protocol_levels_get_connack_01_at_once_without_a_traceback(embedded_broker, registry, caplog,
                                                                         version):
    creds = add_device(registry, "newer")
    if version == "mqtt5":
        connect_bytes = connect_packet("newer", username="newer", password=creds.password, level=5,
                                       properties=b"\x11\x00\x00\x00\x3c")  # session expiry interval 60
    else:
        connect_bytes = connect_packet("newer", username="newer", password=creds.password, level=3, name="MQIsdp")
    caplog.set_level(logging.DEBUG)
    sock = socket.create_connection(("127.0.0.1", embedded_broker.port), timeout=5)
    started = time.monotonic()
    sock.sendall(connect_bytes)
    answers, closed = _packets_until_closed(sock, timeout=30)
    assert closed and time.monotonic() - started < 2 * load_factor()
    assert answers == [(2, 0, b"\x00\x01")], answers  # CONNACK, session present 0, 0x01 unacceptable version
    sock.close()
    assert counters(embedded_broker)["unsupported_protocol"] == 1
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert tracebacks == []
    assert any("reason=unsupported_protocol" in r.getMessage() for r in caplog.records)


def test_pubrel_for_an_unknown_packet_id_gets_pubcomp(embedded_broker, registry):
    creds = add_device(registry, "rel")
    sock, _, rc = raw_session(embedded_broker.port, "rel", username="rel", password=creds.password)
    assert rc == 0
    sock.sendall(ack_packet("pubrel", 4242))
    assert read_packet(sock) == (PUBCOMP, 0, struct.pack("!H", 4242))
    sock.sendall(DISCONNECT)
    sock.close()


def test_session_present_is_1_whenever_a_persistent_session_is_resumed(embedded_broker, registry):
    """[MQTT-3.2.2-2]: also after a clean DISCONNECT (amqtt said 0 then), and 0 for a new or clean session."""
    creds = add_device(registry, "keeper")
    login = {"username": "keeper", "password": creds.password}
    sock, present, rc = raw_session(embedded_broker.port, "keeper", clean=False, **login)
    assert (present, rc) == (0, 0)  # nothing to resume yet
    sock.sendall(subscribe_packet("d/keeper/c", qos=1))
    assert read_packet(sock)[0] == SUBACK
    sock.sendall(DISCONNECT)
    sock.close()

    sock, present, rc = raw_session(embedded_broker.port, "keeper", clean=False, **login)
    assert (present, rc) == (1, 0), "session present must be 1 after a clean DISCONNECT"
    sock.close()  # dropped link, no DISCONNECT

    sock, present, rc = wait_for_session(embedded_broker.port, "keeper", login)
    assert (present, rc) == (1, 0), "session present must be 1 after a dropped link"
    sock.sendall(DISCONNECT)
    sock.close()

    sock, present, rc = raw_session(embedded_broker.port, "keeper", clean=True, **login)
    assert (present, rc) == (0, 0), "a clean session is never 'present'"
    sock.sendall(DISCONNECT)
    sock.close()


def wait_for_session(port: int, client_id: str, login: dict[str, str]) -> tuple[socket.socket, int, int]:
    return raw_session(port, client_id, clean=False, **login)


def _expect_publish(sock: socket.socket) -> tuple[int, str, int | None, bytes]:
    ptype, flags, body = read_packet(sock)
    assert ptype == PUBLISH, (ptype, flags, body)
    topic, packet_id, payload = parse_publish(flags, body)
    return flags, topic, packet_id, payload


def test_unacknowledged_qos2_messages_are_redelivered_on_reconnect(embedded_broker, registry):
    """No PUBREC: the PUBLISH comes again with DUP=1; PUBREC but no PUBCOMP: the PUBREL comes again."""
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    creds = add_device(registry, "q2")
    login = {"username": "q2", "password": creds.password}
    sock, _, rc = raw_session(embedded_broker.port, "q2", clean=False, **login)
    assert rc == 0
    sock.sendall(subscribe_packet("d/q2/c", qos=2))
    assert read_packet(sock) == (SUBACK, 0, b"\x00\x01\x02")
    hub.publish("d/q2/c", b"cmd-1", qos=2)
    flags, topic, packet_id, payload = _expect_publish(sock)
    assert (topic, payload, (flags >> 1) & 3, flags & 0x08) == ("d/q2/c", b"cmd-1", 2, 0)
    sock.close()  # gone before its PUBREC

    sock, present, _ = raw_session(embedded_broker.port, "q2", clean=False, **login)
    assert present == 1
    flags, topic, again_id, payload = _expect_publish(sock)
    assert (payload, again_id, flags & 0x08) == (b"cmd-1", packet_id, 0x08), "not redelivered with DUP=1"
    sock.sendall(ack_packet("pubrec", packet_id))
    assert read_packet(sock) == (PUBREL, 2, struct.pack("!H", packet_id))
    sock.close()  # gone before its PUBCOMP

    sock, _, _ = raw_session(embedded_broker.port, "q2", clean=False, **login)
    assert read_packet(sock) == (PUBREL, 2, struct.pack("!H", packet_id)), "PUBREL not resent"
    sock.sendall(ack_packet("pubcomp", packet_id))
    hub.publish("d/q2/c", b"cmd-2", qos=2)
    _, _, next_id, payload = _expect_publish(sock)
    assert payload == b"cmd-2", "cmd-1 delivered again after its PUBCOMP"
    sock.sendall(ack_packet("pubrec", next_id))
    assert read_packet(sock)[0] == PUBREL
    sock.sendall(ack_packet("pubcomp", next_id) + DISCONNECT)
    sock.close()
    close(hub)


def test_retain_is_refused_on_device_topics_except_status(embedded_broker, registry, caplog):
    live_hub, live = _hub(embedded_broker, registry)
    creds = add_device(registry, "ret")
    dev = connect(embedded_broker.port, creds)
    caplog.set_level(logging.INFO, logger="fleet.broker.guard")
    for cls in ("t", "r", "a", "t", "r", "s"):
        dev.publish(f"d/ret/{cls}", f"retained-{cls}".encode(), qos=1, retain=True).wait_for_publish(5)
    # delivered live as ordinary messages (nothing a device sends is lost) ...
    assert wait_for(lambda: len(live.payloads()) == 6, timeout=5)
    # ... but only the status is kept for a later subscriber
    late = connect(embedded_broker.port, add_device(registry, "late-ops", Role.HUB))
    late_inbox = Inbox().attach(late)
    assert subscribe(late, "d/ret/#") == 1
    live_hub.publish("d/ret/c", b"marker", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"marker" in late_inbox.payloads(), timeout=5)
    retained = [(t, p) for t, p, _q, retain, _d in late_inbox.items if retain]
    assert retained == [("d/ret/s", b"retained-s")]
    assert counters(embedded_broker)["retain_refused"] == 5
    refused = [r.getMessage() for r in caplog.records if "retain refused" in r.getMessage()]
    assert len(refused) == 1 and "client_id=ret" in refused[0], refused  # once per device per interval
    close(dev, live_hub, late)
