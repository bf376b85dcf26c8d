"""The hub's MQTT client reads every PUBLISH whole, in order, however the broker's bytes are split."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.transport import IngestClient, pubacks
from support import wait_for


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, mid: int, qos: int, retain: bool = False, dup: bool = False) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | (0x08 if dup else 0) | (qos << 1) | int(retain)]) + remaining_length(len(body)) + body


def read_packet(conn: socket.socket) -> bytes:
    head = conn.recv(1)
    length, shift = 0, 0
    while True:
        byte = conn.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return head + body


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_publishes_split_anywhere_arrive_whole_and_in_order(seed: int) -> None:
    rng = random.Random(seed)
    expected = []
    for i in range(1, 400):
        qos = 0 if i % 7 == 0 else 1
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 20, 127, 128, 300, 3000])))
        expected.append((f"d/dev-{i % 5}/t".encode(), payload, i if qos else 0, qos, i % 11 == 0))
    # a redelivery (DUP set) now and then: the same message as far as the hub is concerned
    stream = (b"".join(publish(*e, dup=i % 13 == 0) for i, e in enumerate(expected[:200])) + b"\xd0\x00"
              + b"".join(publish(*e, dup=i % 13 == 0) for i, e in enumerate(expected[200:])))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    pubacks: list[bytes] = []

    def broker() -> None:
        conn, _ = server.accept()
        with conn:
            assert read_packet(conn)[0] == 0x10  # CONNECT
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
            pos = 0
            while pos < len(stream):  # cut the stream at random points, including inside headers
                step = rng.choice([1, 2, 3, 50, 700, 5000, 70000])
                conn.sendall(stream[pos:pos + step])
                pos += step
                if rng.random() < 0.2:
                    time.sleep(0.002)
            conn.settimeout(10)
            want = 4 * sum(1 for e in expected if e[3] == 1)
            got = b""
            while len(got) < want:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got += chunk
            pubacks.append(got)

    t = threading.Thread(target=broker, daemon=True)
    t.start()
    received: list[tuple[bytes, bytes, int, int, bool]] = []
    client = IngestClient(mqtt.CallbackAPIVersion.VERSION2, client_id="hub-test", protocol=mqtt.MQTTv311,
                          manual_ack=True)
    fast: list[int] = []
    client.publish_sink = lambda reads: (received.extend(reads), fast.extend(1 for _ in reads))
    client.on_message = lambda c, u, m: received.append((m._topic, m.payload, m.mid, m.qos, bool(m.retain)))
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    try:
        assert wait_for(lambda: len(received) >= len(expected), 20), len(received)
        assert received == expected
        assert len(fast) > len(expected) // 2  # most of them cut straight out of the read buffer
        client.ack_many([e[2] for e in expected if e[3] == 1])
        t.join(20)
        assert pubacks == [b"".join(b"\x40\x02" + e[2].to_bytes(2, "big") for e in expected if e[3] == 1)]
    finally:
        client.disconnect()
        client.loop_stop()
        server.close()


@given(st.lists(st.integers(1, 65535), max_size=600))
def test_pubacks_are_one_packet_per_id_in_order(mids: list[int]) -> None:
    assert pubacks(mids) == b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in mids)
