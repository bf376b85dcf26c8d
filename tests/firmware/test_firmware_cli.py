"""``fleet firmware`` and ``fleet rollout`` through click, on a real database file."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from support import Creds, HubProcess, wait_for

from broker.background import BackgroundBroker
from broker.registry import Registry, Role
from cli.firmware_cmd import render
from cli.main import cli
from hub.firmware import add_image, parse_bandwidth, parse_stages, rollout_status, stage_plan, start_rollout
from hub.storage import PresenceStore, open_database

sys.path.append(str(Path(__file__).resolve().parents[1] / "commands"))
from command_device import CommandDevice  # noqa: E402


def run(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args])
    return result.exit_code, result.stdout, result.stderr


def test_add_and_list_an_image_with_its_size_and_sha256(tmp_path: Path) -> None:
    db, fw = tmp_path / "fleet.db", tmp_path / "app.bin"
    fw.write_bytes(b"\x7fELF" + bytes(1000))
    code, _, err = run(db, "firmware", "add", str(fw), "--version", "1.5.0")
    assert code == 0, err
    code, out, _ = run(db, "firmware", "list")  # piped: JSON
    assert code == 0
    [row] = json.loads(out)
    assert (row["version"], row["size"], row["sha256"]) == ("1.5.0", 1004, hashlib.sha256(fw.read_bytes()).hexdigest())
    assert row["model"] == ""


def test_bad_images_and_requests_get_one_line(tmp_path: Path) -> None:
    db, fw, empty = tmp_path / "fleet.db", tmp_path / "app.bin", tmp_path / "empty.bin"
    fw.write_bytes(b"x" * 100)
    empty.write_bytes(b"")
    assert run(db, "firmware", "add", str(fw), "--version", "1.0")[0] == 0
    cases = [
        (("firmware", "add", str(fw), "--version", "1.0"), "already stored"),
        (("firmware", "add", str(empty), "--version", "2.0"), "is empty"),
        (("firmware", "add", str(tmp_path / "nope.bin"), "--version", "2.0"), "cannot read"),
        (("rollout", "start", "9.9", "--group", "g"), "no firmware '9.9'"),
        (("rollout", "start", "1.0", "--group", "nobody"), "has no active devices"),
        (("rollout", "start", "1.0", "--group", "g", "--stages", "50%,10%"), "rising percentages"),
        (("rollout", "start", "1.0", "--group", "g", "--bandwidth", "fast"), "not a bandwidth"),
        (("rollout", "pause"), "0 rollouts are running"),
        (("rollout", "abort", "7"), "no rollout 7"),
    ]
    for args, message in cases:
        code, out, err = run(db, *args)
        assert code == 1 and message in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


def test_a_rollout_is_started_paused_resumed_and_aborted_from_the_cli(tmp_path: Path) -> None:
    db, fw = tmp_path / "fleet.db", tmp_path / "app.bin"
    fw.write_bytes(b"y" * 5000)
    registry = Registry(db)
    for i in range(20):
        registry.add(f"dev-{i}", Role.DEVICE, group="field")
    assert run(db, "firmware", "add", str(fw), "--version", "2.0")[0] == 0
    code, out, err = run(db, "rollout", "start", "2.0", "--group", "field", "--stages", "10%,50%,100%",
                         "--max-failure-rate", "5%", "--max-concurrent", "4", "--bandwidth", "50kB/s")
    assert code == 0, err
    rid = int(out)
    [status] = json.loads(run(db, "rollout", "status")[1])
    assert status["state"] == "running" and status["stage_sizes"] == [2, 8, 10] and status["counts"] == {"pending": 20}
    assert run(db, "rollout", "start", "2.0", "--group", "field")[0] == 1  # one active rollout per group
    assert run(db, "rollout", "pause")[0] == 0
    assert rollout_status(db, rid)[0].state == "paused"
    assert run(db, "rollout", "resume", str(rid))[0] == 0
    assert run(db, "rollout", "abort")[0] == 0
    assert rollout_status(db, rid)[0].state == "aborted"
    assert json.loads(run(db, "rollout", "status")[1]) == []
    assert [s["id"] for s in json.loads(run(db, "rollout", "status", "--all")[1])] == [rid]


def test_status_renders_progress_bars_per_stage(tmp_path: Path) -> None:
    db, fw = tmp_path / "fleet.db", tmp_path / "app.bin"
    fw.write_bytes(b"z" * 100)
    registry = Registry(db)
    for i in range(10):
        registry.add(f"dev-{i}", Role.DEVICE, group="g")
    assert run(db, "firmware", "add", str(fw), "--version", "3.0")[0] == 0
    assert run(db, "rollout", "start", "3.0", "--group", "g", "--stages", "10%,100%")[0] == 0
    console = Console(record=True, width=100, color_system=None)
    console.print(render(rollout_status(db)))
    text = console.export_text()
    assert "rollout 1" in text and "3.0 -> group g" in text and "running" in text
    assert "stage 1 (10%)" in text and "0/1 finished" in text and "stage 2 (100%)" in text and "0/9 finished" in text
    assert "failure rate 0.0% (max 5%)" in text


def test_parsers_and_stage_plan() -> None:
    assert parse_stages("1%,10%,50%,100%") == (0.01, 0.1, 0.5, 1.0)
    assert parse_bandwidth("50kB/s") == 50_000 and parse_bandwidth("1MiB/s") == 1024 * 1024
    ids = [f"d{i}" for i in range(1000)]
    plan = stage_plan(ids, (0.01, 0.1, 0.5, 1.0), "1.0")
    assert [sum(1 for s in plan.values() if s == k) for k in range(4)] == [10, 90, 400, 500]
    assert stage_plan(ids, (0.01, 1.0), "1.0") != stage_plan(ids, (0.01, 1.0), "2.0")  # canaries change per version



def test_fleet_hub_rollout_device_timeout_fails_a_device_that_never_downloads(
        db_path: Path, embedded_broker: BackgroundBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FLEET_HUB_ROLLOUT_DEVICE_TIMEOUT reaches the hub's engine: a device that ignores its offer fails after it."""
    creds = Creds("deaf-1", Registry(db_path).add("deaf-1", Role.DEVICE, group="deaf"))
    image = tmp_path / "fw.bin"
    image.write_bytes(os.urandom(5000))
    add_image(db_path, image, "2.0")
    monkeypatch.setenv("FLEET_HUB_ROLLOUT_DEVICE_TIMEOUT", "2s")  # the hub process inherits it
    hub = HubProcess(db_path, embedded_broker.port, tmp_path / "hub.log").start()
    device = None
    try:
        device = CommandDevice(embedded_broker.port, creds).connect()  # births; never subscribes to its offers
        assert wait_for(lambda: _online(db_path, "deaf-1"), 30), hub.log.read_text()[-2000:]
        rid = start_rollout(db_path, "2.0", "deaf", (1.0,), 1.0, 1, 1e6)
        assert wait_for(lambda: rollout_status(db_path, rid, all_=True)[0].state == "completed", 30), \
            (rollout_status(db_path, rid, all_=True), hub.log.read_text()[-2000:])
        status = rollout_status(db_path, rid, all_=True)[0]
        assert status.counts == {"failed": 1}
        assert status.failures[0]["detail"] == "no progress for 2 s"
    finally:
        if device is not None:
            device.disconnect()
        hub.stop()


def _online(db: Path, device_id: str) -> bool:
    conn = open_database(db)
    try:
        return any(d.device_id == device_id and d.state == "online" for d in PresenceStore(conn).load_devices())
    finally:
        conn.close()
