"""A fleet.db written by the release before the storage package upgrades in place without losing a row."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from hub.queries import readings
from hub.storage import CURRENT_VERSION, CommandStore, PrincipalStore, StorageError, open_database
from hub.storage.queries import readings_stored
from protocol.models import CommandState

FIXTURE = Path(__file__).parent / "fixtures" / "fleet_v1.db"


MOVED = {"readings", "messages"}
"""Version-1 tables that version 2 turned into views over the compact layout: compared without their
row ids, and with ``received_at`` at the millisecond the compact layout keeps."""


def columns(path: Path, table: str) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    finally:
        conn.close()


def rows_of(conn: sqlite3.Connection, table: str, cols: list[str]) -> list[tuple]:  # type: ignore[type-arg]
    if table in MOVED:
        cols = [c for c in cols if c != "id"]
    picked = ", ".join(f"round({c}, 3)" if table in MOVED and c == "received_at" else c for c in cols)
    return sorted(conn.execute(f'SELECT {picked} FROM "{table}"').fetchall(), key=repr)


def snapshot(path: Path) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """Every row of every table, in a stable order (read with plain sqlite3, before any upgrade)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: rows_of(conn, t, columns(path, t)) for t in tables}
    finally:
        conn.close()


@pytest.fixture
def v1_copy(tmp_path: Path) -> Path:
    target = tmp_path / "fleet.db"
    shutil.copy(FIXTURE, target)
    return target


def test_fixture_is_an_unversioned_file_of_the_old_release() -> None:
    conn = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()
    assert FIXTURE.stat().st_size < 300_000


def test_upgrade_keeps_every_row(v1_copy: Path) -> None:
    before = snapshot(v1_copy)
    v1_columns = {t: columns(v1_copy, t) for t in before}
    assert before["readings"] and before["commands"] and before["principals"] and before["hub_adoptions"]

    conn = open_database(v1_copy)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT_VERSION
        for table, rows in before.items():
            assert rows_of(conn, table, v1_columns[table]) == rows, table
        assert readings_stored(conn) == len(before["readings"])
        assert conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == len(before["readings"])
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == len(before["messages"])
        # the exactly-once key is kept as runs of seqs: fewer rows than messages
        assert conn.execute("SELECT COUNT(*) FROM message_runs").fetchone()[0] < len(before["messages"])
    finally:
        conn.close()


def test_upgraded_file_serves_every_area(v1_copy: Path) -> None:
    open_database(v1_copy).close()
    conn = open_database(v1_copy)
    try:
        states = {r.state for r in CommandStore(conn).list(limit=100)}
        assert set(CommandState) - states <= {CommandState.RECEIVED}  # received is a device's word, never stored
        assert PrincipalStore(conn).get("sim-00001") is not None
    finally:
        conn.close()
    assert len(readings(v1_copy, "sim-00002")) == 96


def test_a_second_open_does_not_migrate_again(v1_copy: Path) -> None:
    open_database(v1_copy).close()
    before = snapshot(v1_copy)
    open_database(v1_copy).close()
    assert snapshot(v1_copy) == before


def test_a_file_from_a_newer_release_is_refused_in_one_line(v1_copy: Path) -> None:
    conn = sqlite3.connect(v1_copy)
    conn.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer than this fleet-hub") as err:
        open_database(v1_copy)
    assert "\n" not in str(err.value)


def test_a_foreign_database_with_our_table_names_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE readings (x TEXT)")
    conn.close()
    with pytest.raises(StorageError, match="not a fleet database"):
        open_database(path)
