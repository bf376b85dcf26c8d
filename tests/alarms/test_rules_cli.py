"""``fleet rules`` and ``fleet alarms`` refuse bad input in one line with a meaningful exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from hub.storage import open_database


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.db"
    open_database(path).close()
    return path


def run(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args, says", [
    (["rules", "add", "x"], "exactly one of --above"),
    (["rules", "add", "x", "--metric", "temperature", "--above", "1", "--offline"], "exactly one of --above"),
    (["rules", "add", "x", "--offline", "--clear-below", "3"], "--clear-below goes with --above"),
    (["rules", "add", "x", "--metric", "temperature", "--above", "40", "--for", "soon"], "not a duration"),
])
def test_usage_errors_are_one_line_exit_2(db: Path, args: list[str], says: str) -> None:
    code, _, err = run(db, *args)
    assert code == 2 and says in err and "Traceback" not in err


def test_rules_round_trip_and_named_errors(db: Path) -> None:
    code, out, _ = run(db, "rules", "add", "hot", "--metric", "temperature", "--above", "40", "--clear-below", "38",
                       "--for", "5m", "--severity", "critical", "--group", "cellar", "--json")
    assert code == 0 and json.loads(out)["for_s"] == 300.0
    code, _, err = run(db, "rules", "add", "hot", "--offline")
    assert code == 1 and "exists already" in err
    code, _, err = run(db, "rules", "add", "warm", "--metric", "temperature", "--above", "40", "--clear-below", "41")
    assert code == 1 and "clear threshold" in err and err.count("\n") <= 1
    code, out, _ = run(db, "rules", "list", "--json")
    (rule,) = json.loads(out)
    assert (rule["name"], rule["group"], rule["condition"]) == ("hot", "cellar", "temperature > 40 (clears < 38) for 300s")
    code, out, _ = run(db, "rules", "list", "--table")
    assert code == 0 and "hot" in out
    assert run(db, "rules", "remove", "nope")[0] == 8
    assert run(db, "rules", "remove", "hot")[0] == 0
    assert json.loads(run(db, "rules", "list")[1]) == []  # not a terminal: JSON


def test_alarm_commands_on_unknown_ids_and_a_missing_database(db: Path, tmp_path: Path) -> None:
    assert run(db, "alarms", "ack", "5")[0] == 8
    assert run(db, "alarms", "show", "5")[0] == 8
    code, out, _ = run(db, "alarms", "--active", "--json")
    assert code == 0 and json.loads(out) == []
    code, _, err = run(tmp_path / "missing.db", "alarms")
    assert code == 9 and "no database" in err
    assert not (tmp_path / "missing.db").exists()
