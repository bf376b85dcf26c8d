"""Hostile input: malformed MQTT packets at the broker's port and malformed payloads at the hub.

Both run for a bounded time while a well-behaved device keeps publishing; afterwards the broker
still takes logins, the hub is still ingesting, and every good message is stored.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_mqtt import (  # tests/broker/raw_mqtt.py (see conftest.py)
    _remaining_length,
    _str,
)
from security_helpers import GoodDevice, stored_seqs
from support import add_device, connect, wait_for

from broker.background import BackgroundBroker
from broker.registry import Registry

FUZZ_S = 8.0
FUZZ_THREADS = 3


def _connect(client_id: bytes, user: bytes | None, password: bytes | None, *, proto: bytes = b"MQTT",
             level: int = 4, flags: int | None = None) -> bytes:
    f = 0x02 if flags is None else flags
    payload = _str(client_id)
    if user is not None and flags is None:
        f |= 0x80
        payload += _str(user)
        if password is not None:
            f |= 0x40
            payload += _str(password)
    body = _str(proto) + bytes([level, f]) + struct.pack("!H", 30) + payload
    return b"\x10" + _remaining_length(len(body)) + body


def hostile_packets(rng: random.Random, dev: str, secret: str) -> tuple[bool, bytes]:
    """(log in first?, bytes to send): one malformed thing, chosen at random."""
    d, sec = dev.encode(), secret.encode()
    kind = rng.randrange(12)
    if kind == 0:
        return False, rng.randbytes(rng.randrange(1, 300))
    if kind == 1:  # remaining length that never ends / claims 256 MB
        return False, b"\x10\xff\xff\xff\x7f" + rng.randbytes(rng.randrange(0, 50))
    if kind == 2:  # truncated CONNECT
        pkt = _connect(d, d, sec)
        return False, pkt[: rng.randrange(1, len(pkt))]
    if kind == 3:  # bad protocol name or level
        return False, _connect(d, d, sec, proto=rng.choice([b"MQIsdp", b"XXXX", b""]), level=rng.choice([0, 3, 5, 255]))
    if kind == 4:  # reserved flag bit, password without username
        return False, _connect(d, None, None, flags=rng.choice([0x01, 0x40, 0x43, 0xFF]))
    if kind == 5:  # CONNECT with a wrong password and a garbage tail
        return False, _connect(d, d, b"wrong") + rng.randbytes(20)
    # the rest come after a valid login as the fuzzing device
    if kind == 6:  # QoS 3 PUBLISH
        body = _str(f"d/{dev}/t".encode()) + b"\x00\x01" + b"{}"
        return True, bytes([0x36]) + _remaining_length(len(body)) + body
    if kind == 7:  # invalid UTF-8 topic
        body = _str(b"d/\xff\xfe/t") + b"\x00\x02" + b"x"
        return True, b"\x32" + _remaining_length(len(body)) + body
    if kind == 8:  # PUBLISH whose topic length exceeds the packet
        body = b"\xff\xff" + b"d/x"
        return True, b"\x32" + _remaining_length(len(body)) + body
    if kind == 9:  # SUBSCRIBE with QoS 3 and a wildcard in the middle
        body = b"\x00\x05" + _str(b"d/#/t") + b"\x03"
        return True, b"\x82" + _remaining_length(len(body)) + body
    if kind == 10:  # a second CONNECT on the same connection
        return True, _connect(d, d, sec)
    return True, bytes([rng.randrange(256)]) + _remaining_length(rng.randrange(0, 100)) + rng.randbytes(rng.randrange(0, 100))


def fuzz_worker(port: int, dev: str, secret: str, seed: int, until: float, counts: list[int]) -> None:
    rng = random.Random(seed)
    login = _connect(dev.encode(), dev.encode(), secret.encode())
    while time.monotonic() < until:
        first, data = hostile_packets(rng, dev, secret)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.settimeout(0.1)
                if first:
                    sock.sendall(login)
                    try:
                        sock.recv(4)
                    except TimeoutError:
                        pass
                sock.sendall(data)
                try:
                    sock.recv(64)
                except (TimeoutError, OSError):
                    pass
        except OSError:
            pass  # the broker closing on us is fine; refusing new connections is checked afterwards
        counts[0] += 1


def test_malformed_mqtt_packets_leave_broker_and_hub_serving(embedded_broker: BackgroundBroker, registry: Registry,
                                                              db_path: Path, start_hub) -> None:  # type: ignore[no-untyped-def]
    port = embedded_broker.port
    start_hub(port)
    good_creds = add_device(registry, "good-1")
    # 50 messages/s for the whole test: above a device's default quota (broker/quota.py), which
    # would hold it back and, on a slow machine, past the hard limit
    registry.set_quota("good-1", msgs_per_s=0, bytes_per_s=0)
    good = GoodDevice(port, good_creds).start()
    fuzz = add_device(registry, "fuzz-1")
    counts = [0]
    until = time.monotonic() + FUZZ_S
    threads = [threading.Thread(target=fuzz_worker, args=(port, fuzz.username, fuzz.password, seed, until, counts))
               for seed in range(FUZZ_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(FUZZ_S + 10)
    sent = good.stop()
    print(f"raw fuzz: {counts[0]} hostile connections in {FUZZ_S} s; good device sent {sent}")
    assert counts[0] > 100
    assert wait_for(lambda: stored_seqs(db_path, "good-1") == set(range(1, sent + 1)), 15), \
        (sent, len(stored_seqs(db_path, "good-1")))
    # the broker still takes a login after all that
    client = connect(port, add_device(registry, "after-1"))
    client.disconnect()
    client.loop_stop()


_JSON_SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20)


def _json_nest(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)


# three levels spelled out instead of st.recursive: hypothesis 6.150+ wrongly warns (an error under
# filterwarnings) that this extend function "doesn't use its argument" when validated in this test
JSONISH = _JSON_SCALARS | _json_nest(_JSON_SCALARS) | _json_nest(_JSON_SCALARS | _json_nest(_JSON_SCALARS))


def almost_telemetry() -> st.SearchStrategy[bytes]:
    """Telemetry-shaped JSON with fields that are missing, of the wrong type or out of range."""
    reading = st.fixed_dictionaries({"metric": st.sampled_from(["temperature", "humidity", "nope", ""]),
                                     "value": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                                        st.text(max_size=3))},
                                    optional={"dt": st.integers(-5, 4_000_000)})
    return st.fixed_dictionaries(
        {"boot": st.integers(-1, 2**33), "seq": st.integers(-1, 2**33), "ts": st.integers(-1, 2**49),
         "readings": st.lists(reading, max_size=70)},
        optional={"extra": JSONISH}).map(lambda d: json.dumps(d, separators=(",", ":")).encode())


PAYLOADS = st.one_of(st.binary(max_size=600), JSONISH.map(lambda v: json.dumps(v).encode()),
                     almost_telemetry(), st.binary(min_size=4097, max_size=5000))


def test_malformed_payloads_are_dead_lettered_and_good_messages_stored(embedded_broker: BackgroundBroker,
                                                                       registry: Registry, db_path: Path,
                                                                       start_hub) -> None:  # type: ignore[no-untyped-def]
    port = embedded_broker.port
    hub = start_hub(port)
    good_creds = add_device(registry, "good-2")
    # 50 messages/s for the whole test: above a device's default quota (broker/quota.py), which
    # would hold it back and, on a slow machine, past the hard limit
    registry.set_quota("good-2", msgs_per_s=0, bytes_per_s=0)
    good = GoodDevice(port, good_creds).start()
    bad = connect(port, add_device(registry, "fuzz-2"))
    thrown = [0]
    deadline = time.monotonic() + 10.0

    @settings(max_examples=400, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(PAYLOADS)
    def throw(payload: bytes) -> None:
        if time.monotonic() > deadline:
            return  # bounded in time whatever hypothesis has left
        bad.publish("d/fuzz-2/t", payload, qos=1).wait_for_publish(10)
        thrown[0] += 1

    try:
        throw()
    finally:
        bad.disconnect()
        bad.loop_stop()
    sent = good.stop()
    assert thrown[0] >= 100
    assert wait_for(lambda: stored_seqs(db_path, "good-2") == set(range(1, sent + 1)), 15)

    def accounted() -> bool:
        s = hub.stats
        received = s["received"].get("t", 0) + s["received"].get("invalid", 0)  # invalid: refused by classify
        return received == s["persisted"].get("t", 0) + s["duplicates"] + sum(s["deadletters"].values())
    # oversized payloads never reach the hub (the broker drops them); everything else is stored or dead-lettered
    assert wait_for(accounted, 10), repr(hub.stats)
    print(f"payload fuzz: thrown={thrown[0]} hub={hub.stats}")
    assert sum(hub.stats["deadletters"].values()) >= thrown[0] // 2
