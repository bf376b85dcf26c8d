"""Several hub workers on one Mosquitto through a shared subscription: the load splits, nothing is lost or doubled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from scaleout_helpers import DEVICES, Producer, WorkerProcess
from support import add_device, connect, db_rows, wait_for

from hub.config import HubSettings
from hub.errors import HubError
from hub.service import Hub
from protocol.codec import encode
from protocol.models import Status
from protocol.topics import MessageClass, topic_for

pytestmark = pytest.mark.mosquitto


def worker_settings(db: Path, port: int, n: int, **kw: object) -> HubSettings:
    return HubSettings(db=db, broker=f"mqtt://127.0.0.1:{port}", worker_group="ingest", client_id=f"hub-ingest-{n}",
                       presence_check_s=0.2, **kw)  # type: ignore[arg-type]


def stored(db: Path) -> list[tuple[str, int]]:
    return db_rows(db, "SELECT device_id, seq FROM messages ORDER BY device_id, seq")




@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    started: list[Hub] = []
    yield started
    for h in started:
        h.stop()


def test_two_workers_split_the_load_exactly_once(mosquitto, registry, db_path, hubs) -> None:  # type: ignore[no-untyped-def]
    for n in (1, 2):
        hubs.append(Hub(worker_settings(db_path, mosquitto.port, n)).start())
    producer = Producer(mosquitto.port, registry, count=300)
    try:
        producer.thread.start()
        producer.thread.join(30)
        expected = {(d, s) for d in DEVICES for s in range(1, 301)}
        assert producer.sent == expected
        assert wait_for(lambda: len(stored(db_path)) >= len(expected), 15)
    finally:
        producer.close()
    rows = stored(db_path)
    assert len(rows) == len(set(rows)) and set(rows) == expected
    # a worker counts a batch after its commit: the rows can be visible a moment before the counters
    assert wait_for(lambda: sum(h.stats["messages"] for h in hubs) >= len(expected), 15)
    per_worker = [h.stats["messages"] for h in hubs]
    assert all(n > 0 for n in per_worker) and sum(per_worker) == len(expected), per_worker
    assert sum(h.stats["duplicates"] for h in hubs) == 0
    assert db_rows(db_path, "SELECT COUNT(*) FROM readings")[0][0] == 5 * len(expected)
    # every worker's messages count for gap detection: no gap stays open
    assert db_rows(db_path, "SELECT COUNT(*) FROM gaps WHERE missing > 0")[0][0] == 0
    workers = {w for (w,) in db_rows(db_path, "SELECT worker FROM hub_status")}
    assert workers == {"hub-ingest-1", "hub-ingest-2"}


def test_worker_group_refused_on_a_broker_without_shared_subscriptions(embedded_broker, db_path) -> None:  # type: ignore[no-untyped-def]
    hub = Hub(worker_settings(db_path, embedded_broker.port, 1))
    with pytest.raises(HubError, match="does not deliver shared subscriptions"):
        hub.start()
    hub.stop()


def test_sigkill_one_worker_mid_stream_loses_and_doubles_nothing(mosquitto, registry, db_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL a real `fleet hub --worker-group` process mid-stream, restart it with its client id: zero loss.

    Mosquitto 2.0.11 keeps a dead member's persistent session in the group: the messages in flight
    to it (unacked: the hub acks after commit), and its share of what arrives while it is down,
    wait in that session until the same client id reconnects. So the restart is part of recovery.
    """
    workers = [WorkerProcess(db_path, mosquitto.port, "ingest", f"hub-ingest-{n}", tmp_path / f"w{n}.log").start()
               for n in (1, 2)]
    producer: Producer | None = None
    try:
        assert wait_for(lambda: _workers_up(db_path) == 2, 15), [w.log.read_text() for w in workers]
        producer = Producer(mosquitto.port, registry, count=400, rate_hz=100)
        producer.thread.start()
        assert wait_for(lambda: len(stored(db_path)) > 300, 10)
        workers[0].kill()
        producer.thread.join(30)
        expected = {(d, s) for d in DEVICES for s in range(1, 401)}
        assert producer.sent == expected
        wait_for(lambda: len(stored(db_path)) >= len(expected), 2)
        while_down = len(stored(db_path))
        workers[0].start()  # same client id: its session (and what waits in it) comes back
        assert wait_for(lambda: len(stored(db_path)) >= len(expected), 15), (while_down, len(stored(db_path)))
    finally:
        if producer is not None:
            producer.close()
        for w in workers:
            w.stop()
    rows = stored(db_path)
    assert len(rows) == len(set(rows)) and set(rows) == expected
    print(f"stored while worker 1 was down: {while_down} of {len(expected)}")


def _workers_up(db: Path) -> int:
    rows = db_rows(db, "SELECT COUNT(*) FROM hub_status WHERE connected = 1")
    return int(rows[0][0]) if rows else 0


def test_a_will_on_one_worker_and_the_next_birth_on_the_other_leave_the_device_online(  # type: ignore[no-untyped-def]
        mosquitto, registry, db_path, hubs) -> None:
    """A device reboots: its will reaches one worker and its new boot's birth the other (the group shares
    ``s``). The will, held for the hysteresis, must not take the device offline after the birth: the
    cause of rollouts that never finished on a worker group (the new firmware's birth was undone)."""
    for n in (1, 2):
        hubs.append(Hub(worker_settings(db_path, mosquitto.port, n, offline_hysteresis_s=0.5)).start())
    ids = [f"reboot-{i}" for i in range(8)]
    clients = {d: connect(mosquitto.port, add_device(registry, d)) for d in ids}
    try:
        for d, c in clients.items():
            _status(c, d, Status(state="online", boot=1, fw="1.0.0", interval_s=60))
        assert wait_for(lambda: _presence(db_path, ids) == {d: ("online", 1) for d in ids}, 15)
        for d, c in clients.items():
            _status(c, d, Status(state="offline", boot=1))
            _status(c, d, Status(state="online", boot=2, fw="2.0.0", interval_s=60))
        assert wait_for(lambda: {b for _, b in _presence(db_path, ids).values()} == {2}, 15)
        # every will has been dealt with (cancelled by a birth, ignored, skipped or applied) by both workers
        assert wait_for(lambda: not any(h.ingest.writer and h.ingest.writer.presence._wills for h in hubs), 15)
        assert _presence(db_path, ids) == {d: ("online", 2) for d in ids}
    finally:
        for c in clients.values():
            c.disconnect()
            c.loop_stop()


def _status(client: mqtt.Client, device_id: str, status: Status) -> None:
    client.publish(topic_for(device_id, MessageClass.STATUS), encode(status), qos=1, retain=True).wait_for_publish(10)


def _presence(db: Path, ids: list[str]) -> dict[str, tuple[str, int]]:
    rows = db_rows(db, "SELECT device_id, state, boot FROM devices")
    return {d: (state, boot) for d, state, boot in rows if d in ids}
