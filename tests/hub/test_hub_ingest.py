"""Lossless ingest: every (device, seq) stored exactly once, duplicates ignored, gaps recorded."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pgserver import BACKENDS, backend_db_path

from hub.storage import open_database as connect_db
from hub.storage.queries import gaps as query_gaps, latest as query_latest, readings as query_readings, readings_plan
from hub_helpers import publish_seqs, stop_client, stored_messages, stored_readings, scalar
from support import add_device, connect, wait_for


@pytest.fixture(params=BACKENDS)
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """This suite runs against a SQLite file and a private PostgreSQL server."""
    return backend_db_path(request, tmp_path)


def test_many_devices_every_seq_stored_exactly_once(embedded_broker, registry, db_path, start_hub):
    hub = start_hub(embedded_broker.port)
    devices = [f"dev-{i:02d}" for i in range(20)]
    clients = [connect(embedded_broker.port, add_device(registry, d)) for d in devices]
    per_device = 40
    threads = [threading.Thread(target=publish_seqs, args=(c, d, range(1, per_device + 1)), kwargs={"n": 2})
               for c, d in zip(clients, devices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    total = len(devices) * per_device
    assert wait_for(lambda: stored_messages(db_path) >= total, 15), stored_messages(db_path)
    assert stored_messages(db_path) == total
    assert stored_readings(db_path) == total * 2
    for d in devices:
        seqs = scalar(db_path, "SELECT COUNT(DISTINCT seq) FROM messages WHERE device_id = ?", (d,))
        assert seqs == per_device
    assert scalar(db_path, "SELECT COUNT(*) FROM gaps") == 0
    assert hub.stats["duplicates"] == 0
    for c in clients:
        stop_client(c)


def test_same_seq_twice_stores_once(embedded_broker, registry, db_path, start_hub):
    hub = start_hub(embedded_broker.port)
    client = connect(embedded_broker.port, add_device(registry, "dup-1"))
    publish_seqs(client, "dup-1", [1, 2, 2, 3, 3, 3], encoding="cbor")
    assert wait_for(lambda: hub.stats.get("duplicates", 0) >= 3)
    assert stored_messages(db_path) == 3
    assert stored_readings(db_path) == 3
    stop_client(client)


def test_skipped_seq_records_gap_and_late_arrival_closes_it(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    client = connect(embedded_broker.port, add_device(registry, "gappy"))
    publish_seqs(client, "gappy", [1, 2, 6, 7])
    assert wait_for(lambda: stored_messages(db_path) == 4)
    conn = connect_db(db_path)
    (gap,) = query_gaps(conn, "gappy")
    assert (gap["from_seq"], gap["to_seq"], gap["missing"]) == (3, 5, 3)
    publish_seqs(client, "gappy", [4])  # a late arrival splits the gap
    assert wait_for(lambda: stored_messages(db_path) == 5)
    open_gaps = query_gaps(conn, "gappy", open_only=True)
    assert [(g["from_seq"], g["to_seq"]) for g in open_gaps] == [(3, 3), (5, 5)]
    publish_seqs(client, "gappy", [3, 5])
    assert wait_for(lambda: stored_messages(db_path) == 7)
    assert query_gaps(conn, "gappy", open_only=True) == []
    # a new boot starts a fresh sequence: no gap for the reset
    publish_seqs(client, "gappy", [1, 2], boot=2)
    assert wait_for(lambda: stored_messages(db_path) == 9)
    assert query_gaps(conn, "gappy", open_only=True) == []
    conn.close()
    stop_client(client)


def test_latest_and_time_range_queries(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    client = connect(embedded_broker.port, add_device(registry, "q-1"))
    publish_seqs(client, "q-1", [1, 2, 3], n=3)
    assert wait_for(lambda: stored_readings(db_path) == 9)
    conn = connect_db(db_path)
    latest = query_latest(conn, "q-1")
    assert [(r["metric"], r["value"]) for r in latest] == [("temperature", 23.5)]
    rows = query_readings(conn, "q-1", metric="temperature")
    assert len(rows) == 9 and rows == sorted(rows, key=lambda r: (r["ts"], r["seq"], r["idx"]))
    plan = readings_plan(conn, "q-1", metric="temperature", since=0)
    if "postgresql" in str(db_path):  # an index range scan of the samples' key
        assert "Index Scan using samples_pkey" in plan and "series = r.id" in plan, plan
    else:
        assert "SEARCH s USING PRIMARY KEY (series=? AND ts>?)" in plan, plan  # one range scan, no sort of the table
    conn.close()
    stop_client(client)


def test_watermark_published_after_commit(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    client = connect(embedded_broker.port, add_device(registry, "wm-1"))
    marks: list[bytes] = []
    client.on_message = lambda c, u, m: marks.append(m.payload)
    client.subscribe("d/wm-1/w", qos=1)
    publish_seqs(client, "wm-1", [1, 2, 3, 5])
    assert wait_for(lambda: any(b'"seq":3' in m for m in marks)), marks
    stop_client(client)
