"""Opening fleet.db: one error class with one readable line; read-only commands never create the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from hub.queries import readings
from hub.storage import CURRENT_VERSION, StorageError, open_database


def test_a_new_file_gets_the_whole_schema_at_the_current_version(db_path: Path) -> None:
    conn = open_database(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert int(conn.execute("PRAGMA busy_timeout").fetchone()[0]) >= 1000
    finally:
        conn.close()
    assert readings(db_path, "nobody") == []  # every table exists: an empty answer, not an error


def test_not_a_database_is_one_named_error(tmp_path: Path) -> None:
    junk = tmp_path / "fleet.db"
    junk.write_bytes(b"this is a text file, not SQLite\n" * 100)
    for readonly in (False, True):
        with pytest.raises(StorageError, match="is not a fleet database") as err:
            open_database(junk, readonly=readonly)
        assert "\n" not in str(err.value) and err.value.hint
    assert junk.read_bytes().startswith(b"this is a text file")  # left as it was


def test_read_only_open_never_creates_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "fleet.db"
    with pytest.raises(StorageError, match=f"no database at {missing}"):
        open_database(missing, readonly=True)
    assert not missing.exists()


@pytest.mark.parametrize("args", [["readings", "dev-1"], ["deadletters"], ["devices", "list"], ["commands"],
                                  ["export"]])
def test_listing_commands_on_a_missing_database_say_so_in_one_line(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "fleet.db"
    res = CliRunner().invoke(cli, ["--db", str(missing), *args])
    assert res.exit_code != 0
    assert f"no database at {missing}" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not missing.exists()


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        folder = tmp_path / "no-such-folder"  # root writes anywhere; a missing folder fails the same way
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    with pytest.raises(StorageError, match="cannot open the fleet database") as err:
        open_database(folder / "fleet.db")
    assert "\n" not in str(err.value)


def test_a_folder_given_as_database_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a folder"):
        open_database(tmp_path)
