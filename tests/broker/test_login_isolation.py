"""Failed logins touch nothing (AMQTT_NOTES.md #8) and never stall the broker (#9)."""

from __future__ import annotations

import statistics
import threading
import time

import pytest
from paho_helpers import subscribe
from raw_mqtt import raw_connect

from broker.registry import Role
from support import add_device, connect, wait_for


def _session_count(embedded_broker) -> int:  # type: ignore[no-untyped-def]
    async def count() -> int:
        return len(embedded_broker.broker.amqtt._sessions)

    return int(embedded_broker.call(count))


@pytest.mark.parametrize("victim_clean", [True, False], ids=["victim-clean", "victim-persistent"])
@pytest.mark.parametrize("attacker_clean", [True, False], ids=["attacker-clean", "attacker-persistent"])
def test_wrong_password_with_a_live_client_id_leaves_the_victim_alone(embedded_broker, registry, victim_clean,
                                                                       attacker_clean):
    victim_creds = add_device(registry, "victim")
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    victim = connect(embedded_broker.port, victim_creds, clean=victim_clean)
    got: list[bytes] = []
    drops: list[object] = []
    victim.on_message = lambda c, u, m: got.append(m.payload)
    victim.on_disconnect = lambda *a: drops.append(a)
    assert subscribe(victim, "d/victim/c") == 1
    hub.publish("d/victim/c", b"before", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"before" in got, timeout=5)

    sock, rc = raw_connect(embedded_broker.port, "victim", username="victim", password="wrong",
                           clean=attacker_clean, will=("d/victim/s", b"forged-offline"))
    sock.close()
    assert rc == 5  # CONNACK not authorized

    hub.publish("d/victim/c", b"after", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"after" in got, timeout=5), "victim lost its session or subscription"
    assert drops == [] and victim.is_connected()
    for c in (victim, hub):
        c.disconnect()
        c.loop_stop()


def test_failed_logins_leave_no_zombie_session(embedded_broker, registry):
    creds = add_device(registry, "dev-1")
    registry.add("target", secret="a secret a person chose")  # scrypt: the slow check under test
    live = connect(embedded_broker.port, creds)
    before = _session_count(embedded_broker)
    access = embedded_broker.broker.access
    failed_before = access.failed_logins
    for i in range(50):
        # alternate a live client id, a known device and an unknown one
        client_id = ("dev-1", "target", f"ghost-{i}")[i % 3]
        sock, rc = raw_connect(embedded_broker.port, client_id, username=client_id, password="nope", clean=i % 2 == 0)
        sock.close()
        assert rc == 5
    assert access.failed_logins - failed_before == 50
    assert _session_count(embedded_broker) == before
    assert live.is_connected()
    live.disconnect()
    live.loop_stop()


def test_bad_logins_do_not_stall_round_trips(embedded_broker, registry):
    """20 concurrent wrong-password logins cost ~20 scrypt hashes; they must run off the event loop."""
    dev = connect(embedded_broker.port, add_device(registry, "rtt"))
    registry.add("target", secret="a secret a person chose")  # scrypt: the slow check under test
    # warm up
    for _ in range(5):
        dev.publish("d/rtt/t", b"x", qos=1).wait_for_publish(5)

    start = threading.Barrier(21)
    codes: list[int] = []

    def bad_login() -> None:
        start.wait(5)
        sock, rc = raw_connect(embedded_broker.port, "target", username="target", password="wrong", timeout=15)
        sock.close()
        codes.append(rc)

    threads = [threading.Thread(target=bad_login) for _ in range(20)]
    for t in threads:
        t.start()
    start.wait(5)
    rtts: list[float] = []
    began = time.perf_counter()
    while any(t.is_alive() for t in threads):  # sample only while the bad logins are in progress
        t0 = time.perf_counter()
        info = dev.publish("d/rtt/t", b"x", qos=1)
        info.wait_for_publish(5)
        assert info.is_published()
        rtts.append(time.perf_counter() - t0)
    for t in threads:
        t.join(15)
    assert codes == [5] * 20
    elapsed = time.perf_counter() - began
    # with the hash on the loop, 20 scrypt checks (~50 ms each) block it for a second: a handful
    # of round trips of several hundred ms each (measured: 2 samples, 910 and 536 ms)
    assert len(rtts) >= 5, f"only {len(rtts)} QoS1 round trips in {elapsed:.2f} s of bad logins"
    p50 = statistics.median(rtts)
    assert p50 < 0.1, f"median QoS1 round trip {p50 * 1000:.0f} ms during bad logins ({len(rtts)} samples)"
    dev.disconnect()
    dev.loop_stop()
