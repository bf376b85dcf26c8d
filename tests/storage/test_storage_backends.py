"""The stores on both backends: the same calls give the same rows on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pgserver import BACKENDS, PostgresServer, backend_db_path

from hub.storage import CommandStore, IngestStore, Period, PrincipalStore, StatusStore, StorageError, open_database, transaction
from hub.storage import queries
from hub.storage.dialect import to_postgres
from hub.storage.schema import CURRENT_VERSION, MIGRATIONS, PG_STEPS
from protocol.models import CommandState


@pytest.fixture(params=BACKENDS)
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return backend_db_path(request, tmp_path)


def test_every_migration_has_a_postgresql_twin() -> None:
    assert sorted(PG_STEPS) == list(range(1, len(MIGRATIONS) + 1))


def test_the_dialect_rewrites_what_postgresql_spells_differently() -> None:
    assert to_postgres("INSERT OR IGNORE INTO t (a) VALUES (?)") == "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING"
    assert to_postgres("INSERT OR REPLACE INTO quotas (subject, msgs_per_s) VALUES (?, ?)") == (
        "INSERT INTO quotas (subject, msgs_per_s) VALUES (%s, %s)"
        " ON CONFLICT (subject) DO UPDATE SET msgs_per_s = EXCLUDED.msgs_per_s")
    assert to_postgres("SELECT MAX(a), MIN(b, MAX(c, ?)) FROM t WHERE x LIKE 'a%'") == (
        "SELECT MAX(a), LEAST(b, GREATEST(c, %s)) FROM t WHERE x LIKE 'a%%'")


def test_exactly_once_key_and_batches(db_path: Path) -> None:
    conn = open_database(db_path)
    store = IngestStore(conn)
    rows = [("d1", 1, s, "t", 1_700_000_000_000 + s, 1_700_000_000.5, False) for s in (1, 2, 2, 3)]
    with store.transaction():
        assert store.insert_messages(rows) == [True, True, False, True]
        store.insert_readings([("d1", 1, s, 0, "temp", 21.5 + s, 1_700_000_000 + s, 1.0, 0) for s in (1, 2, 3)])
        assert store.insert_message("d1", 1, 4, "t", 1_700_000_000_004, 1_700_000_000.5, False)
    with store.transaction():  # the writer's way: offered one by one
        offered = [store.insert_message("d1", 1, s, "t", 1_700_000_000_000 + s, 1_700_000_000.5, False)
                   for s in (5, 3, 5, 6)]
        assert offered == [True, False, False, True]
    with store.transaction():  # a redelivery after a crash: nothing stored twice
        assert store.insert_messages(rows[:2]) == [False, False]
        store.insert_readings([("d1", 1, 1, 0, "temp", 22.5, 1_700_000_001, 1.0, 0)])
        assert not store.insert_message("d1", 1, 4, "t", 1_700_000_000_004, 1_700_000_000.5, False)
    assert queries.messages_stored(conn) == 6
    got = queries.readings(conn, "d1")
    assert [(r["seq"], r["value"]) for r in got] == [(1, 22.5), (2, 23.5), (3, 24.5)]
    minute = queries.rollups(conn, "d1", Period.MINUTE)
    assert sum(r["count"] for r in minute) >= 3 and max(r["max"] for r in minute) == 24.5
    gap = store.save_gap_row("d1", 1, None, 5, 6, 2, 1.0, None)
    assert queries.gaps(conn, "d1")[0]["id"] == gap
    conn.close()


def test_staged_samples_of_many_statements_are_each_stored_once(db_path: Path) -> None:
    """SQLite stores 100 samples per INSERT: a batch of 260 takes two whole statements and a remainder."""
    conn = open_database(db_path)
    store = IngestStore(conn)
    t0 = 1_700_000_000_000

    def stage(seqs: range) -> None:
        store.stage_readings([("d1", 1, seq, t0 + seq * 1000, [(dt, "temp", seq + dt / 100) for dt in range(13)],
                               1_700_000_000.5, False) for seq in seqs])

    with store.transaction():
        stage(range(1, 21))  # 260 samples
    with store.transaction():
        stage(range(9, 31))  # 12 messages' samples again (the writer never stages them twice, the key holds), 10 new
    got = queries.readings(conn, "d1")
    assert len(got) == 30 * 13 == queries.table_counts(conn)["samples"]
    assert [(r["seq"], r["idx"], r["value"]) for r in got[:14]] == [
        *((1, dt, 1 + dt / 100) for dt in range(13)), (2, 0, 2.0)]
    assert sorted({r["seq"] for r in got}) == list(range(1, 31))
    conn.close()


def test_aggregates_merge_by_value_across_batches(db_path: Path) -> None:
    # SQLite keeps min, max and last packed (m * 8 + k), which do not sort like their values: -1.5 packs to
    # -119 and -0.25 to -198, 150.0 to 1200 and 100.125 to 801003. Each batch's aggregate is merged by value.
    conn = open_database(db_path)
    store = IngestStore(conn)
    t0 = 1_700_000_040  # all in one minute
    values = (21.5, 3.25, -0.25, -1.5, 150.0, 100.125, 7.0)
    for seq, value in enumerate(values, start=1):
        with store.transaction():
            store.insert_readings([("d1", 1, seq, 0, "temp", value, t0 + seq, 1.0, 0)])
    (minute,) = queries.rollups(conn, "d1", Period.MINUTE)
    assert (minute["count"], minute["min"], minute["max"], minute["last"]) == (7, -1.5, 150.0, 7.0)
    assert minute["mean"] == sum(values) / 7
    conn.close()


def test_a_failed_transaction_leaves_nothing(db_path: Path) -> None:
    conn = open_database(db_path)
    store = IngestStore(conn)
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_message("d1", 1, 1, "t", 1, 1.0, False)
        raise RuntimeError("boom")
    assert queries.messages_stored(conn) == 0
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    conn.close()


def test_a_transaction_inside_a_transaction_is_a_savepoint(db_path: Path) -> None:
    """The command bridge creates a request's commands in one transaction; each create is its own inner one."""
    conn = open_database(db_path)
    commands = CommandStore(conn)
    with transaction(conn):
        kept = commands.create("d1", "ping", {}, ttl_s=60, command_id="c-kept")
        with pytest.raises(sqlite3.IntegrityError):  # another worker's copy of the same request, say
            commands.create("d1", "ping", {}, ttl_s=60, command_id="c-kept")
        with pytest.raises(RuntimeError), transaction(conn):
            commands.create("d2", "ping", {}, ttl_s=60, command_id="c-undone")
            raise RuntimeError("boom")
        # the outer transaction goes on after both failures (PostgreSQL refuses every statement after
        # a failed one unless it was rolled back to a savepoint)
        assert commands.transition(kept, CommandState.SENT, expect=(CommandState.QUEUED,))
        assert not conn.execute("SELECT 1 FROM commands WHERE id = 'c-undone'").fetchall()
    assert not conn.in_transaction
    assert [c.id for c in commands.active()] == ["c-kept"]
    assert [h["state"] for h in commands.history("c-kept")] == ["queued", "sent"]
    with pytest.raises(RuntimeError), transaction(conn):  # the outer block failing undoes the inner ones
        commands.create("d3", "ping", {}, ttl_s=60, command_id="c-outer")
        raise RuntimeError("boom")
    assert commands.get("c-outer") is None
    conn.close()


def test_commands_registry_and_status(db_path: Path) -> None:
    conn = open_database(db_path)
    commands = CommandStore(conn)
    rec = commands.create("d1", "reboot", {"delay": 1}, ttl_s=60, owner="w1")
    assert not commands.claim(rec.id, "w2") and commands.claim(rec.id, "w1")
    assert commands.transition(rec, CommandState.SENT, expect=(CommandState.QUEUED,))
    assert not commands.transition(rec, CommandState.SENT, expect=(CommandState.QUEUED,))
    assert [h["state"] for h in commands.history(rec.id)] == ["queued", "sent"]
    assert commands.hand_over("w1", "w2") == 1
    principals = PrincipalStore(conn)
    from hub.storage import Principal, Role
    principals.put(Principal("d1", Role.DEVICE, "h", 1.0, group="g"))
    principals.put(Principal("d1", Role.DEVICE, "h2", 2.0, group="g2"))  # replaced, not doubled
    assert [p.group for p in principals.list()] == ["g2"]
    status = StatusStore(conn)
    status.write_heartbeat("w1", 1, 1.0, "mqtt://x", True, {"a": 1}, 2.0)
    status.write_heartbeat("w1", 1, 1.0, "mqtt://x", True, {"a": 2}, 3.0)
    assert [h.stats for h in status.heartbeats()] == [{"a": 2}]
    assert status.claim_adoption("w1", "w2", 1.0) == "w2" and status.claim_adoption("w1", "w3", 1.0) == "w2"
    with pytest.raises(sqlite3.IntegrityError):  # the same error class on both backends
        conn.execute("INSERT INTO hub_adoptions (worker, adopter, since) VALUES (?, ?, ?)", ("w1", "x", 1.0))
    conn.close()


def test_readonly_refuses_writes(db_path: Path) -> None:
    open_database(db_path).close()
    conn = open_database(db_path, readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO counters (name, value) VALUES ('x', 1)")
    conn.close()


def test_a_fresh_postgresql_database_is_at_the_current_version(postgres_db: Path) -> None:
    conn = open_database(postgres_db)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == CURRENT_VERSION
    conn.close()
    open_database(postgres_db).close()  # a second open finds it current


@pytest.mark.parametrize("url, expected", [
    ("postgresql://fleet@127.0.0.1:{closed}/x", "cannot reach the PostgreSQL server"),
    ("postgresql://nobody@/{db}?host={sock}&port={port}", "no such user|refused the login"),
    ("postgresql://fleet@/no_such_db?host={sock}&port={port}", "no database 'no_such_db'"),
])
def test_postgresql_errors_are_one_readable_line(postgres_server: PostgresServer, url: str, expected: str) -> None:
    from broker.server import free_port

    target = url.format(closed=free_port(), sock=postgres_server.sock, port=postgres_server.port, db="postgres")
    with pytest.raises(StorageError, match=expected) as err:
        open_database(Path(target))
    assert "\n" not in str(err.value)
