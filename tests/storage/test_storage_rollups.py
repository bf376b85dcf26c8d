"""Per-minute and per-hour aggregates: built in the ingest transaction, kept when retention deletes readings."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from click.testing import CliRunner

from broker.registry import Registry
from cli.main import cli
from hub.queries import readings, rollups
from hub.store import HubStore
from hub.storage.rollups import Period, fold
from hub.storage.schema import V3_ROLLUPS
from hub.storage.values import unpack
from hub.storage import open_database
from hub.storage.queries import table_counts
from protocol.codec import encode
from protocol.models import Reading, Telemetry
from protocol.topics import MessageClass, topic_for
from support import add_device, connect, wait_for

HOUR0 = 1_789_999_200  # a whole hour (Unix seconds)


def write(db: Path, device: str, samples: list[tuple[float, str, float]], first_seq: int = 1) -> None:
    """One message per reading, through the writer's store, as the hub writes them."""
    store = HubStore(db)
    with store.transaction():
        for i, (ts, metric, value) in enumerate(samples):
            seq = first_seq + i
            assert store.insert_message(device, 1, seq, "t", round(ts * 1000), ts + 0.1, False)
            store.insert_readings([(device, 1, seq, 0, metric, value, ts, ts + 0.1, 0)])
    store.close()


def test_fold_keeps_count_min_max_sum_and_the_latest_value() -> None:
    acc = fold([(1, 60_500, 2.0), (1, 60_100, 5.0), (1, 119_999, -1.0), (1, 120_000, 7.0), (2, 60_000, 3.0)])
    assert acc[(1, 60, 60_000)] == [3, -1.0, 5.0, 6.0, -1.0, 119_999]
    assert acc[(1, 60, 120_000)] == [1, 7.0, 7.0, 7.0, 7.0, 120_000]
    assert acc[(1, 3600, 0)] == [4, -1.0, 7.0, 13.0, 7.0, 120_000]
    assert acc[(2, 60, 60_000)][0] == 1


def test_aggregates_per_minute_and_hour_across_batches(db_path: Path) -> None:
    write(db_path, "agg-1", [(HOUR0 + 5, "temperature", 20.5), (HOUR0 + 50, "temperature", 22.25),
                             (HOUR0 + 70, "temperature", 19.0), (HOUR0 + 10, "humidity", 40.0)])
    write(db_path, "agg-1", [(HOUR0 + 30, "temperature", 25.0)], first_seq=10)  # a later batch, same minute
    minutes = rollups(db_path, "agg-1", Period.MINUTE, metric="temperature")
    assert [(r["start"], r["count"], r["min"], r["max"], r["last"]) for r in minutes] == [
        (HOUR0, 3, 20.5, 25.0, 22.25), (HOUR0 + 60, 1, 19.0, 19.0, 19.0)]  # last = latest device time, not arrival
    assert minutes[0]["mean"] == (20.5 + 22.25 + 25.0) / 3
    hours = rollups(db_path, "agg-1", Period.HOUR)
    assert {(r["metric"], r["count"]) for r in hours} == {("temperature", 4), ("humidity", 1)}


def test_min_max_and_last_are_stored_packed(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    write(db, "pk-1", [(HOUR0 + 1, "temperature", 21.53), (HOUR0 + 2, "temperature", 0.1 + 0.2)])
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT typeof(low), typeof(high), typeof(last), typeof(total) FROM rollups"
                          " WHERE period = 60").fetchone()
    conn.close()
    assert stored == ("real", "integer", "real", "real")  # 0.30000000000000004 is no short decimal: kept as it is
    (minute,) = rollups(db, "pk-1", Period.MINUTE)
    assert (minute["min"], minute["max"], minute["last"]) == (0.1 + 0.2, 21.53, 0.1 + 0.2)


def test_version_9_aggregates_are_packed_by_the_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    write(db, "up-1", [(HOUR0 + 1, "temperature", 19.75), (HOUR0 + 2, "temperature", 23.5)])
    before = rollups(db, "up-1", Period.MINUTE) + rollups(db, "up-1", Period.HOUR)
    # back to version 9: the same rows in its rollups table, whose value columns are REAL
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT * FROM rollups").fetchall()
    conn.execute("DROP TABLE rollups")
    conn.execute(V3_ROLLUPS)
    conn.executemany("INSERT INTO rollups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (*r[:4], unpack(r[4]), unpack(r[5]), r[6], unpack(r[7]), r[8]) for r in rows])
    assert {r[0] for r in conn.execute("SELECT typeof(low) FROM rollups")} == {"real"}
    conn.execute("PRAGMA user_version = 9")
    conn.commit()
    conn.close()
    open_database(db).close()  # upgrades
    assert rollups(db, "up-1", Period.MINUTE) + rollups(db, "up-1", Period.HOUR) == before
    conn = sqlite3.connect(db)
    assert {r[0] for r in conn.execute("SELECT typeof(low) || typeof(high) || typeof(last) FROM rollups")} == {
        "integerintegerinteger"}
    conn.close()
    write(db, "up-1", [(HOUR0 + 3, "temperature", 12.0)], first_seq=3)  # and later batches merge into them
    (minute,) = rollups(db, "up-1", Period.MINUTE)
    assert (minute["count"], minute["min"], minute["max"], minute["last"]) == (3, 12.0, 23.5, 12.0)


def test_retention_deletes_readings_and_keeps_their_aggregates(db_path: Path) -> None:
    old = time.time() - 3 * 86400
    write(db_path, "old-1", [(old + i, "temperature", 20.0 + i) for i in range(120)])
    store = HubStore(db_path)
    deleted = 0
    while (n := store.delete_old_readings(time.time() - 86400, 50)) > 0:
        deleted += n
    store.close()
    assert deleted == 120 and readings(db_path, "old-1") == []
    assert sum(r["count"] for r in rollups(db_path, "old-1", Period.MINUTE)) == 120
    registry = Registry(db_path)
    add_device(registry, "old-1")  # the CLI answers only for registered devices
    registry.conn.close()
    res = CliRunner().invoke(cli, ["--db", str(db_path), "readings", "old-1", "--every", "1h", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert sum(r["count"] for r in rows) == 120 and min(r["min"] for r in rows) == 20.0
    assert max(r["max"] for r in rows) == 139.0


def test_export_writes_aggregates(db_path: Path) -> None:
    write(db_path, "exp-1", [(HOUR0 + i * 30, "temperature", float(i)) for i in range(10)])
    res = CliRunner().invoke(cli, ["--db", str(db_path), "export", "--every", "1m", "--format", "jsonl"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["count"] for r in rows] == [2] * 5 and rows[0]["period"] == 60 and rows[0]["device_id"] == "exp-1"
    assert "exported 5 aggregates" in res.stderr


def test_the_running_hub_keeps_aggregates_of_what_retention_deleted(embedded_broker, registry, db_path,  # type: ignore[no-untyped-def]
                                                                    start_hub) -> None:
    hub = start_hub(embedded_broker.port, retain_days=2.0 / 86400, retention_check_s=0.2, retention_chunk=1000)
    client = connect(embedded_broker.port, add_device(registry, "ret-agg"))
    now_ms = int(time.time() * 1000)
    infos = [client.publish(topic_for("ret-agg", MessageClass.TELEMETRY), encode(Telemetry(
        boot=1, seq=seq, ts=now_ms, readings=[Reading(dt=i, metric="temperature", value=20.0 + i) for i in range(10)])),
        qos=1) for seq in range(1, 21)]  # 200 readings
    for info in infos:
        info.wait_for_publish(10)
    assert wait_for(lambda: stored_samples(db_path) == 200 or hub.stats["retention_deleted"] > 0, 10)
    assert wait_for(lambda: stored_samples(db_path) == 0, 8)  # older than 2 s: deleted
    assert hub.stats["retention_deleted"] == 200
    assert sum(r["count"] for r in rollups(db_path, "ret-agg", Period.MINUTE)) == 200
    assert sum(r["count"] for r in rollups(db_path, "ret-agg", Period.HOUR)) == 200
    client.disconnect()
    client.loop_stop()


def stored_samples(db: Path) -> int:
    conn = open_database(db, readonly=True)
    try:
        return table_counts(conn)["samples"]
    finally:
        conn.close()
