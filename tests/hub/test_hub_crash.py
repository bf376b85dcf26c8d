"""SIGKILL the hub process in the middle of a stream, restart it: nothing lost, nothing duplicated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_helpers import publish_seqs, scalar, stop_client, stored_messages, stored_readings

from broker.registry import Role, role_subject
from support import HubProcess, add_device, connect, load_factor, wait_for, wait_progress

DEVICES = 4
PER_DEVICE = 1200
READINGS = 2


@pytest.fixture
def hub_process(tmp_path: Path, db_path: Path) -> Iterator[HubProcess]:
    procs: list[HubProcess] = []

    def make(port: int) -> HubProcess:
        hp = HubProcess(db_path, port, tmp_path / "hub.log")
        procs.append(hp)
        return hp

    yield make  # type: ignore[misc]
    for hp in procs:
        hp.stop()


def crash_and_recover(port: int, clients: list, device_ids: list[str], hub: HubProcess, db: Path) -> None:  # type: ignore[type-arg]
    hub.start()
    # first contact: the hub's persistent session exists once seq 1 of every device is stored;
    # seq 1 is re-sent until then (the hub subscribes a moment after it starts; repeats are de-duplicated)
    deadline = time.monotonic() + 30 * load_factor()  # the hub process starts slowly on a loaded machine
    while stored_messages(db) < DEVICES and time.monotonic() < deadline:
        for client, dev in zip(clients, device_ids):
            publish_seqs(client, dev, [1], n=READINGS)
        wait_for(lambda: stored_messages(db) == DEVICES, 0.5)
    assert stored_messages(db) == DEVICES, hub.log.read_text()[-2000:]

    def stream(client, dev):  # type: ignore[no-untyped-def]
        for start in range(2, PER_DEVICE + 1, 100):
            publish_seqs(client, dev, range(start, min(start + 100, PER_DEVICE + 1)), n=READINGS)
            time.sleep(0.02)

    threads = [threading.Thread(target=stream, args=(c, d)) for c, d in zip(clients, device_ids)]
    for t in threads:
        t.start()
    total = DEVICES * PER_DEVICE
    assert wait_progress(lambda: stored_messages(db), total // 4) >= total // 4, hub.log.read_text()[-2000:]
    hub.kill()
    killed_at = stored_messages(db)
    assert killed_at < total, "the stream ended before the kill; make it longer"
    time.sleep(0.3)
    hub.start()
    for t in threads:
        t.join(60 * load_factor())
        assert not t.is_alive(), "a device is still publishing"
    # recovery: fail only when the count stops moving (a loaded machine is slow, not stuck)
    assert wait_progress(lambda: stored_messages(db), total) == total, hub.log.read_text()[-2000:]
    assert stored_readings(db) == total * READINGS
    assert scalar(db, "SELECT COUNT(*) FROM (SELECT 1 FROM readings GROUP BY device_id, boot, seq, idx"
                      " HAVING COUNT(*) > 1)") == 0
    for dev in device_ids:
        assert scalar(db, "SELECT COUNT(DISTINCT seq) FROM messages WHERE device_id = ?", (dev,)) == PER_DEVICE
    assert scalar(db, "SELECT COUNT(*) FROM gaps WHERE missing > 0") == 0


@pytest.mark.timeout(600)  # waits scale with the machine's load (wait_progress); this bounds the whole run
def test_sigkill_mid_stream_loses_nothing_on_mosquitto(mosquitto, registry, db_path, hub_process):
    device_ids = [f"crash-{i}" for i in range(DEVICES)]
    for d in device_ids:
        add_device(registry, d)  # the hub only takes telemetry from registered devices
    clients = [connect(mosquitto.port, None, client_id=d) for d in device_ids]
    try:
        crash_and_recover(mosquitto.port, clients, device_ids, hub_process(mosquitto.port), db_path)
    finally:
        for c in clients:
            stop_client(c)


@pytest.mark.timeout(600)
def test_sigkill_mid_stream_loses_nothing_on_embedded_broker(embedded_broker, registry, db_path, hub_process):
    """Holds because broker/ redelivers unacknowledged QoS1 and queues for the offline hub (AMQTT_NOTES.md #3, #4)."""
    device_ids = [f"crash-{i}" for i in range(DEVICES)]
    # 1,200 messages per device in a few seconds: far above a device's default quota (broker/quota.py)
    registry.set_quota(role_subject(Role.DEVICE), msgs_per_s=0, bytes_per_s=0)
    clients = [connect(embedded_broker.port, add_device(registry, d)) for d in device_ids]
    try:
        crash_and_recover(embedded_broker.port, clients, device_ids, hub_process(embedded_broker.port), db_path)
    finally:
        for c in clients:
            stop_client(c)
