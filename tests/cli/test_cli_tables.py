"""What an operator reads: tables fit the terminal with ids whole, ids round-trip, device text is inert.

A real paho device publishes a birth whose ``fw`` carries terminal escape sequences (OSC title,
clear screen), an alert with the same, and answers a command with such a detail; the tables of
`fleet devices list` and `fleet commands` show them escaped, at 80 and at 200 columns.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from broker.registry import Registry, Role
from cli.main import cli
from cli.output import fit_columns
from hub.storage import CommandStore
from protocol import Alert, Command, CommandReply, MessageClass, Status, decode, encode, topic_for
from support import Creds, add_device, wait_for

EVIL_FW = "\x1b]0;PWNED\x07\x1b[2J"
EVIL_TEXT = "\x1b[2J\x1b[1;1H ALL SYSTEMS NORMAL"


def run(db: Path, *args: str, columns: int = 80) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, ["--db", str(db), *args], env={"COLUMNS": str(columns)}, catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


# ------------------------------------------------------------------ fitting columns (pure)

def test_least_important_columns_shrink_then_go_and_ids_stay_whole() -> None:
    cols = ["id", "state", "note", "created_at"]
    cells = [["sim-00001-with-a-long-id", "online", "x" * 40, "2026-11-30 12:00:00"]]
    widths, hidden = fit_columns(cols, cells, 200, shrink=["created_at", "note"], whole=["id"])
    assert hidden == [] and widths == {"id": 24, "state": 6, "note": 40, "created_at": 19}
    widths, hidden = fit_columns(cols, cells, 80, shrink=["created_at", "note"], whole=["id"])
    assert hidden == [] and widths["id"] == 24 and widths["created_at"] == 19 - 0 or widths["created_at"] <= 19
    assert sum(widths.values()) + 3 * len(cols) + 1 <= 80 and widths["id"] == 24
    widths, hidden = fit_columns(cols, cells, 50, shrink=["created_at", "note"], whole=["id"])
    assert hidden == ["created_at"] and widths["id"] == 24
    assert sum(widths[c] for c in cols if c not in hidden) + 3 * (len(cols) - len(hidden)) + 1 <= 50


# ------------------------------------------------------------------ a fleet with hostile text

class EvilDevice:
    """A device that puts escape sequences in everything it controls."""

    def __init__(self, port: int, creds: Creds) -> None:
        self.id = creds.username
        self.subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(creds.username, creds.password)
        c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_for(self.id, MessageClass.COMMAND), qos=1)
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        assert self.subscribed.wait(10)
        birth = Status(state="online", boot=1, fw=EVIL_FW, interval_s=30)
        c.publish(topic_for(self.id, MessageClass.STATUS), encode(birth), qos=1, retain=True).wait_for_publish(5)
        alert = Alert(boot=1, seq=1, ts=int(time.time() * 1000), code="door", severity="critical", message=EVIL_TEXT)
        c.publish(topic_for(self.id, MessageClass.ALERT), encode(alert), qos=1).wait_for_publish(5)

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        cmd = decode(MessageClass.COMMAND, msg.payload)
        assert isinstance(cmd, Command)
        topic = topic_for(self.id, MessageClass.REPLY)
        c.publish(topic, encode(CommandReply(id=cmd.id, state="received")), qos=1)
        c.publish(topic, encode(CommandReply(id=cmd.id, state="failed", detail=EVIL_TEXT)), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def evil_fleet(embedded_broker, registry: Registry, db_path: Path, start_hub) -> Iterator[tuple[Path, str]]:  # type: ignore[no-untyped-def]
    hub = start_hub(embedded_broker.port)
    for i in range(3):
        registry.add(f"sim-{i + 1:05d}", Role.DEVICE, group="sim", tags=("sim", "floor-2"))
    dev = EvilDevice(embedded_broker.port, add_device(registry, "evil-device-with-a-long-id-01"))
    try:
        store = CommandStore(str(db_path))
        assert wait_for(lambda: hub.stats["messages"] >= 1, timeout=15)  # the alert is stored
        rec = hub.commands.submit("evil-device-with-a-long-id-01", "ping")
        assert wait_for(lambda: store.get(rec.id).state.value == "failed", timeout=15)
        yield db_path, rec.id
    finally:
        dev.close()


def assert_inert(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, repr(text)


@pytest.mark.parametrize("columns", [80, 200])
def test_devices_list_fits_with_whole_ids_and_inert_fw(evil_fleet: tuple[Path, str], columns: int) -> None:
    db, _ = evil_fleet
    code, out, err = run(db, "devices", "list", "--table", columns=columns)
    assert code == 0, err
    assert_inert(out)
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    for dev in ["evil-device-with-a-long-id-01", "sim-00001", "sim-00002", "sim-00003"]:
        assert sum(dev in line for line in lines) == 1, out  # whole, and on one line: no row wraps
    if columns == 200:
        assert "\\x1b]0;PWNED\\x07\\x1b[2J" in out  # shown, escaped
    else:
        assert "--json shows all; not shown at 80 columns: revoked_at, created_at" in out


def test_alert_with_escape_sequences_is_stored_as_sent(evil_fleet: tuple[Path, str]) -> None:
    import sqlite3

    db, _ = evil_fleet
    conn = sqlite3.connect(db)
    try:
        (message,) = conn.execute("SELECT message FROM alerts").fetchone()
    finally:
        conn.close()
    assert message == EVIL_TEXT  # the data is kept intact; only display escapes it


@pytest.mark.parametrize("columns", [80, 200])
def test_commands_list_then_show_the_printed_id(evil_fleet: tuple[Path, str], columns: int) -> None:
    db, command_id = evil_fleet
    code, out, _ = run(db, "commands", "--table", columns=columns)
    assert code == 0 and command_id in out and all(len(line) <= columns for line in out.splitlines())
    assert_inert(out)
    printed = next(word.strip("│┃ ") for line in out.splitlines() for word in line.split() if word.startswith("c") and len(word.strip("│┃ ")) == len(command_id))
    code, out, err = run(db, "commands", "show", printed, "--table", columns=columns)
    assert code == 0 and command_id in err and "\\x1b[2J" in err
    assert_inert(out + err)
    code, out, _ = run(db, "commands", "show", command_id[:6], "--json")
    data = json.loads(out)
    assert data["id"] == command_id and data["detail"] == EVIL_TEXT and [h["state"] for h in data["history"]][-1] == "failed"


def test_ambiguous_prefix_lists_the_candidates(evil_fleet: tuple[Path, str]) -> None:
    db, _ = evil_fleet
    store = CommandStore(str(db))
    ids = [store.create("sim-00001", "ping", {}, 60, command_id=f"cab{i}0000000000000").id for i in range(2)]
    res = CliRunner().invoke(cli, ["--db", str(db), "commands", "show", "cab"])
    assert res.exit_code == 8 and len(res.stderr.splitlines()) == 1
    assert "ambiguous" in res.stderr and all(i in res.stderr for i in ids)
    res = CliRunner().invoke(cli, ["--db", str(db), "commands", "show", "cab1", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["id"] == ids[1]


def test_log_lines_on_a_terminal_escape_device_text() -> None:
    """Hub and broker log lines carry client ids, topics and details a device chose: the text formatter escapes them."""
    import logging

    from cli.runtime import _JsonFormatter, _TextFormatter

    record = logging.LogRecord("fleet.broker.access", logging.WARNING, __file__, 1,
                               "denied action=publish username=%s topic=%s", ("evil", "d/x/\x1b]0;PWNED\x07"), None)
    text = _TextFormatter("%(levelname)s %(name)s %(message)s").format(record)
    assert text == "WARNING fleet.broker.access denied action=publish username=evil topic=d/x/\\x1b]0;PWNED\\x07"
    as_json = _JsonFormatter().format(record)
    assert_inert(as_json)
    assert json.loads(as_json)["msg"].endswith("\x1b]0;PWNED\x07")  # JSON escapes it; the value is intact
