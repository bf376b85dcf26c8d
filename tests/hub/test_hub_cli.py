"""``fleet readings``, ``fleet deadletters`` and ``fleet devices list`` on a database the hub filled."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.main import cli
from broker.registry import Registry
from hub.storage import open_database
from hub_helpers import birth, publish, publish_seqs, stop_client, stored_messages
from protocol.codec import encode
from protocol.topics import MessageClass
from support import add_device, connect, wait_for


@pytest.fixture
def filled_db(embedded_broker, registry, db_path, start_hub):  # type: ignore[no-untyped-def]
    hub = start_hub(embedded_broker.port)
    add_device(registry, "idle-1")
    client = connect(embedded_broker.port, add_device(registry, "cli-1"))
    publish(client, "cli-1", MessageClass.STATUS, encode(birth(boot=4, fw="3.2.1")), retain=True).wait_for_publish(5)
    publish_seqs(client, "cli-1", [1, 2, 3], boot=4, n=2)
    publish(client, "cli-1", MessageClass.TELEMETRY, b"\x00garbage").wait_for_publish(5)
    assert wait_for(lambda: stored_messages(db_path) == 3 and hub.stats["deadletters"].get("undecodable") == 1)
    stop_client(client)
    return db_path


def run(db_path, *args: str) -> object:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, ["--db", str(db_path), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_readings_json_and_csv(filled_db):
    rows = json.loads(run(filled_db, "readings", "cli-1", "--json"))
    assert len(rows) == 6
    assert {r["metric"] for r in rows} == {"temperature"} and sorted(r["seq"] for r in rows) == [1, 1, 2, 2, 3, 3]
    assert json.loads(run(filled_db, "readings", "cli-1", "--metric", "humidity", "--json")) == []
    assert len(json.loads(run(filled_db, "readings", "cli-1", "--since", "10m", "--json"))) == 6
    csv_text = run(filled_db, "readings", "cli-1", "--csv")
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("ts,metric,value") and len(lines) == 7
    unknown = CliRunner().invoke(cli, ["--db", str(filled_db), "readings", "nobody", "--json"])
    assert unknown.exit_code == 8 and unknown.stdout == ""
    assert unknown.stderr == "Error: unknown device 'nobody'; `fleet devices list` shows the registered ones\n"


def test_deadletters_json(filled_db):
    rows = json.loads(run(filled_db, "deadletters", "--json"))
    assert [(r["reason"], r["device_id"], r["topic"]) for r in rows] == [("undecodable", "cli-1", "d/cli-1/t")]
    assert bytes.fromhex(rows[0]["payload_hex"]) == b"\x00garbage"


def test_devices_list_shows_presence(filled_db):
    rows = {r["id"]: r for r in json.loads(run(filled_db, "devices", "list", "--json"))}
    assert (rows["cli-1"]["state"], rows["cli-1"]["fw"], rows["cli-1"]["boot"]) == ("online", "3.2.1", 4)
    assert rows["cli-1"]["last_seen"] > 0
    assert rows["idle-1"]["state"] is None and rows["idle-1"]["last_seen"] is None


def test_readings_on_an_empty_db(tmp_path):
    open_database(tmp_path / "empty.db").close()  # a database no hub has written to yet
    Registry(tmp_path / "empty.db").add("x")
    assert json.loads(run(tmp_path / "empty.db", "readings", "x", "--json")) == []
    assert json.loads(run(tmp_path / "empty.db", "deadletters", "--json")) == []


def test_readings_where_there_is_no_database_say_so_and_create_none(tmp_path):
    for args in (["readings", "x"], ["deadletters"]):
        result = CliRunner().invoke(cli, ["--db", str(tmp_path / "empty.db"), *args, "--json"])
        assert result.exit_code == 9 and result.stdout == ""
        assert result.stderr.startswith(f"Error: no database at {tmp_path / 'empty.db'}")
        assert len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
