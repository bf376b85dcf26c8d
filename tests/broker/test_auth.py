"""Logins against the registry and per-device topic rules, with real clients on a real broker."""

from __future__ import annotations

import subprocess
import threading

import pytest

from broker.registry import Role
from support import Creds, add_device, connect, wait_for


def test_device_with_its_secret_connects_and_wrong_secret_is_refused(embedded_broker, registry):
    creds = add_device(registry, "sensor-1")
    client = connect(embedded_broker.port, creds)
    client.disconnect()
    client.loop_stop()
    creds.password = "wrong"
    with pytest.raises(ConnectionRefusedError):
        connect(embedded_broker.port, creds)


def test_anonymous_refused_by_default(embedded_broker):
    with pytest.raises(ConnectionRefusedError):
        connect(embedded_broker.port, None)


def test_device_client_id_must_equal_username(embedded_broker, registry):
    creds = add_device(registry, "sensor-2")
    with pytest.raises(ConnectionRefusedError):
        connect(embedded_broker.port, creds, client_id="someone-else")


def test_revoked_device_is_refused(embedded_broker, registry):
    creds = add_device(registry, "sensor-3")
    registry.revoke("sensor-3")
    with pytest.raises(ConnectionRefusedError):
        connect(embedded_broker.port, creds)


def test_mosquitto_pub_as_device_reaches_hub_and_foreign_topic_does_not(embedded_broker, registry):
    dev = add_device(registry, "sensor-4")
    hub = add_device(registry, "hub", Role.HUB)
    got: list[tuple[str, bytes]] = []
    client = connect(embedded_broker.port, hub)
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    client.subscribe("d/#", qos=1)
    port = str(embedded_broker.port)
    base = ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", dev.username, "-i", dev.username, "-P", dev.password, "-q", "1"]
    wait_for(lambda: False, timeout=0.3)
    subprocess.run([*base, "-t", "d/sensor-4/t", "-m", "own"], check=True, timeout=10)
    subprocess.run([*base, "-t", "d/other/t", "-m", "foreign"], check=True, timeout=10)
    assert wait_for(lambda: ("d/sensor-4/t", b"own") in got)
    wait_for(lambda: False, timeout=0.5)
    assert ("d/other/t", b"foreign") not in got
    client.disconnect()
    client.loop_stop()


# ---------------------------------------------------------------------------- hash schemes


def test_generated_secret_is_stored_with_the_fast_scheme_and_a_given_one_with_scrypt(registry):
    from broker.secrets import Scheme, scheme_of, verify_secret

    generated = registry.add("gen-1")
    chosen = registry.add("typed-1", secret="a secret a person typed")
    assert scheme_of(registry.get("gen-1").secret_hash) is Scheme.HMAC_SHA256
    assert scheme_of(registry.get("typed-1").secret_hash) is Scheme.SCRYPT
    assert verify_secret(generated, registry.get("gen-1").secret_hash)
    assert not verify_secret(generated + "x", registry.get("gen-1").secret_hash)
    assert verify_secret(chosen, registry.get("typed-1").secret_hash)


def test_fast_scheme_refuses_a_short_secret():
    from broker.secrets import Scheme, hash_secret

    with pytest.raises(ValueError):
        hash_secret("password1", scheme=Scheme.HMAC_SHA256)


def test_old_scrypt_hashes_keep_logging_in_next_to_fast_ones(embedded_broker, registry):
    old = Creds("legacy-1", registry.add("legacy-1", secret="legacy secret chosen by hand"))
    new = add_device(registry, "fresh-1")
    for creds in (old, new):
        client = connect(embedded_broker.port, creds)
        client.disconnect()
        client.loop_stop()
    wrong = Creds("fresh-1", new.password[:-1] + ("A" if new.password[-1] != "A" else "B"))
    with pytest.raises(ConnectionRefusedError):
        connect(embedded_broker.port, wrong)


def test_generated_secret_logs_in_while_every_hash_thread_is_busy(embedded_broker, registry):
    """A generated secret is verified without the scrypt threads: guessers keeping them busy
    cannot delay an honest device's first login."""
    creds = add_device(registry, "fresh-2")
    release = threading.Event()
    access = embedded_broker.broker.access
    blockers = [access._pool.submit(release.wait, 30) for _ in range(access._pool._max_workers)]
    try:
        client = connect(embedded_broker.port, creds, timeout=10)
        client.disconnect()
        client.loop_stop()
        assert not any(b.done() for b in blockers)  # the pool really was busy all along
    finally:
        release.set()
