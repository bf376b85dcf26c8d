"""Hub workers "on two machines" share one PostgreSQL: separate processes, separate working folders, one database
reached over TCP; a SIGKILL of either worker loses no reading and stores none twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pgserver import PostgresServer
from scaleout_helpers import DEVICES, Producer, WorkerProcess
from support import db_rows, wait_for, wait_progress

from broker.registry import Registry
from hub.storage.location import database_name

pytestmark = pytest.mark.mosquitto

COUNT = 300
READINGS_PER_MESSAGE = 5  # what Producer sends


def test_two_machines_share_postgresql_exactly_once_across_sigkill_of_either(
        mosquitto, postgres_server: PostgresServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Worker 1 is SIGKILLed mid-stream and restarted, then worker 2: every reading stored exactly once.

    Each worker runs in its own folder (its secrets and logs there, nothing shared but the database and
    the broker), and reaches PostgreSQL over TCP on 127.0.0.1 as a worker on another machine would.
    """
    url = postgres_server.new_database()
    tcp = Path(postgres_server.tcp_url(database_name(url)))
    registry = Registry(tcp)  # the registry lives in the same database
    workers = []
    for n in (1, 2):
        home = tmp_path / f"machine-{n}"
        home.mkdir()
        w = WorkerProcess(tcp, mosquitto.port, "ingest", f"hub-ingest-{n}", home / "hub.log")
        w.cwd = home
        workers.append(w.start())
    producer: Producer | None = None
    expected = {(d, s) for d in DEVICES for s in range(1, COUNT + 1)}
    try:
        assert wait_for(lambda: _workers_up(tcp) == 2, 30), [w.log.read_text() for w in workers]
        producer = Producer(mosquitto.port, registry, count=COUNT, rate_hz=60)
        producer.thread.start()
        for victim, mark in ((workers[0], len(expected) // 4), (workers[1], len(expected) // 2)):
            assert wait_progress(lambda: len(_stored(tcp)), mark) >= mark
            victim.kill()
            assert wait_progress(lambda: len(_stored(tcp)), mark + len(DEVICES) * 20) >= mark  # the other goes on
            victim.start()  # same client id: its broker session (and what waits in it) comes back
        producer.thread.join(60)
        assert producer.sent == expected
        got = wait_progress(lambda: len(_stored(tcp)), len(expected))
        assert got >= len(expected), (got, [w.log.read_text()[-2000:] for w in workers])
    finally:
        if producer is not None:
            producer.close()
        for w in workers:
            w.stop()
    rows = _stored(tcp)
    assert len(rows) == len(set(rows)) and set(rows) == expected
    readings = db_rows(tcp, "SELECT device_id, seq, idx FROM readings")
    assert len(readings) == len(set(readings)) == READINGS_PER_MESSAGE * len(expected)
    # each machine kept its own side files in its own folder; nothing landed in the test's folder
    assert all(os.listdir(tmp_path / f"machine-{n}") for n in (1, 2))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("machine-")) == ["machine-1", "machine-2"]


def _stored(db: Path) -> list[tuple[str, int]]:
    return db_rows(db, "SELECT device_id, seq FROM messages")


def _workers_up(db: Path) -> int:
    rows = db_rows(db, "SELECT COUNT(*) FROM hub_status WHERE connected = 1")
    return int(rows[0][0]) if rows else 0
