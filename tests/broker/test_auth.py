"""Logins against the registry and per-device topic rules, with real clients on a real broker."""

from __future__ import annotations

import subprocess

import pytest
from paho_helpers import subscribe

from broker.registry import Role
from support import add_device, connect, wait_for


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
    assert subscribe(client, "d/#") == 1
    port = str(embedded_broker.port)
    base = ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", dev.username, "-i", dev.username, "-P", dev.password, "-q", "1"]
    # the foreign one first: the own one, sent after it, is the marker that it had its chance to arrive
    subprocess.run([*base, "-t", "d/other/t", "-m", "foreign"], check=True, timeout=30)
    subprocess.run([*base, "-t", "d/sensor-4/t", "-m", "own"], check=True, timeout=30)
    assert wait_for(lambda: ("d/sensor-4/t", b"own") in got, timeout=15)
    assert ("d/other/t", b"foreign") not in got
    client.disconnect()
    client.loop_stop()
