"""Commands end to end: `fleet send` -> hub -> real broker -> a paho device -> back, tracked in SQLite."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.registry import Role
from cli.main import cli
from command_device import CommandDevice
from hub.storage import CommandStore
from protocol.models import CommandState
from hub.config import HubSettings
from hub.service import Hub
from protocol import CommandReply
from support import add_device, broker_counters, connect, wait_for


@pytest.fixture
def hub(embedded_broker, db_path) -> Iterator[Hub]:
    h = Hub(HubSettings(db=db_path, broker=f"mqtt://127.0.0.1:{embedded_broker.port}", presence_check_s=0.2))
    h.start()
    yield h
    h.stop()


def fleet(db: Path, port: int, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args, "--broker", f"mqtt://127.0.0.1:{port}"],
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def states(db: Path, command_id: str) -> list[str]:
    return [h["state"] for h in CommandStore(str(db)).history(command_id)]


def test_round_trip_rejected_and_failed(embedded_broker, registry, db_path, hub):
    dev = CommandDevice(embedded_broker.port, add_device(registry, "dev-rt")).connect()
    try:
        code, out, _ = fleet(db_path, embedded_broker.port, "send", "dev-rt", "ping", "--json", "--timeout", "10s")
        assert code == 0, out
        [row] = json.loads(out)
        assert row["state"] == "succeeded" and row["result"] == {"pong": 1}
        assert states(db_path, row["id"]) == ["queued", "sent", "delivered", "succeeded"]

        code, out, _ = fleet(db_path, embedded_broker.port, "send", "dev-rt", "self_destruct", "--json")
        assert code == 4 and json.loads(out)[0]["state"] == "rejected"
        assert "unknown command" in json.loads(out)[0]["detail"]

        code, out, _ = fleet(db_path, embedded_broker.port, "send", "dev-rt", "set_interval", "--arg", "seconds=0", "--json")
        assert code == 3 and json.loads(out)[0]["state"] == "failed"
        assert dev.executed and len(dev.executed) == len(set(dev.executed)) == 3
    finally:
        dev.disconnect()


def test_unknown_device_is_one_line_and_nonzero(embedded_broker, db_path, hub):
    code, out, err = fleet(db_path, embedded_broker.port, "send", "ghost", "ping")
    assert code != 0
    assert "unknown device 'ghost'" in err
    assert "Traceback" not in err


def test_hub_not_running_is_said_in_one_line(embedded_broker, db_path):
    result = CliRunner().invoke(cli, ["--db", str(db_path), "send", "x", "ping", "--broker",
                                      f"mqtt://127.0.0.1:{embedded_broker.port}"])
    assert result.exit_code != 0
    assert "is `fleet hub` running?" in str(result.exception) or "is `fleet hub` running?" in result.stderr


def test_offline_device_gets_command_after_reconnect_within_ttl_and_never_after(embedded_broker, registry, db_path, hub):
    creds_a = add_device(registry, "dev-late")
    creds_b = add_device(registry, "dev-expire")
    code, out, _ = fleet(db_path, embedded_broker.port, "send", "dev-late", "ping", "--no-wait", "--ttl", "60s", "--json")
    assert code == 7  # device offline: queued, its own exit code
    assert json.loads(out)[0]["detail"].startswith("device offline; queued until ")
    late_id = json.loads(out)[0]["id"]
    code, out, _ = fleet(db_path, embedded_broker.port, "send", "dev-expire", "ping", "--no-wait", "--ttl", "1s", "--json")
    expire_id = json.loads(out)[0]["id"]
    store = CommandStore(str(db_path))
    assert store.get(late_id).state is CommandState.QUEUED
    assert wait_for(lambda: store.get(expire_id).state is CommandState.EXPIRED, timeout=5)

    dev_a = CommandDevice(embedded_broker.port, creds_a).connect()
    dev_b = CommandDevice(embedded_broker.port, creds_b).connect()
    try:
        assert wait_for(lambda: store.get(late_id).state is CommandState.SUCCEEDED, timeout=10)
        assert dev_a.executed == [late_id]
        # marker: a command created after dev-expire is online goes out after anything queued for it before
        marker = hub.commands.submit("dev-expire", "ping")
        assert wait_for(lambda: store.get(marker.id).state is CommandState.SUCCEEDED, timeout=10)
        assert dev_b.received == [marker.id] and dev_b.executed == [marker.id]
    finally:
        dev_a.disconnect()
        dev_b.disconnect()


def test_redelivered_command_executes_once(embedded_broker, registry, db_path, hub):
    dev = CommandDevice(embedded_broker.port, add_device(registry, "dev-dup"), ignore_first=0).connect()
    try:
        rec = hub.commands.submit("dev-dup", "ping")
        store = CommandStore(str(db_path))
        assert wait_for(lambda: store.get(rec.id).state is CommandState.SUCCEEDED, timeout=10)
        # force a redelivery of the very same command id, as a broker or a hub retry would
        from protocol import Command, MessageClass, encode, topic_for

        hub_client = connect(embedded_broker.port, add_device(registry, "hub-2", Role.HUB))
        cmd = Command(id=rec.id, name="ping", expires=int(rec.expires_at * 1000))
        hub_client.publish(topic_for("dev-dup", MessageClass.COMMAND), encode(cmd), qos=1).wait_for_publish(5)
        assert wait_for(lambda: dev.received.count(rec.id) == 2, timeout=5)
        assert dev.executed == [rec.id]
        hub_client.disconnect()
        hub_client.loop_stop()
    finally:
        dev.disconnect()


def test_unacknowledged_command_is_resent_with_same_id(embedded_broker, registry, db_path, hub):
    dev = CommandDevice(embedded_broker.port, add_device(registry, "dev-deaf"), ignore_first=1).connect()
    try:
        hub.commands.bridge.settings = hub.commands.bridge.settings.model_copy(update={"ack_timeout_s": 0.5})
        rec = hub.commands.submit("dev-deaf", "ping")
        store = CommandStore(str(db_path))
        assert wait_for(lambda: store.get(rec.id).state is CommandState.SUCCEEDED, timeout=10)
        assert dev.received.count(rec.id) >= 2 and dev.executed == [rec.id]
        assert store.get(rec.id).attempts >= 2
    finally:
        dev.disconnect()


def test_device_cannot_command_another_device_or_forge_a_result(embedded_broker, registry, db_path, hub, caplog):
    caplog.set_level(logging.WARNING, logger="fleet.broker.access")
    victim = CommandDevice(embedded_broker.port, add_device(registry, "dev-victim")).connect()
    attacker = CommandDevice(embedded_broker.port, add_device(registry, "dev-attacker")).connect()
    try:
        hub.commands.bridge.settings = hub.commands.bridge.settings.model_copy(update={"ack_timeout_s": 30})
        # a command the victim never answers: hold back its acknowledgement
        victim.ignore_first = 10
        rec = hub.commands.submit("dev-victim", "ping")
        assert wait_for(lambda: rec.id in victim.received, timeout=5)
        from protocol import Command, MessageClass, encode, topic_for

        # the attacker publishes a command to the victim's command topic: the broker drops it
        assert attacker.client is not None
        bogus = Command(id="evil-1", name="reboot", expires=int(time.time() * 1000) + 60_000)
        denials = broker_counters(embedded_broker)["denials"]
        attacker.client.publish(topic_for("dev-victim", MessageClass.COMMAND), encode(bogus), qos=1).wait_for_publish(5)
        # ... and forges results, on the victim's reply topic (dropped) and on its own (ignored by the hub)
        attacker.reply(CommandReply(id=rec.id, state="succeeded"), device_id="dev-victim", wait=True)
        attacker.reply(CommandReply(id=rec.id, state="succeeded"), wait=True)

        # markers, not a fixed wait: the broker has refused both publishes on the victim's topics (the
        # first is logged, the second only counted: denials are summarized per client), and the hub has
        # handled (and ignored) the forged reply on the attacker's own topic
        assert wait_for(lambda: broker_counters(embedded_broker)["denials"] >= denials + 2, timeout=5), \
            broker_counters(embedded_broker)
        assert any("denied action=publish" in r.getMessage() and "topic=d/dev-victim/c" in r.getMessage()
                   for r in caplog.records), caplog.text
        assert wait_for(lambda: hub.commands.bridge.counters["forged_replies"] >= 1, timeout=5)
        assert "evil-1" not in victim.received
        assert CommandStore(str(db_path)).get(rec.id).state is CommandState.SENT
    finally:
        victim.disconnect()
        attacker.disconnect()


def test_commands_listing_and_show(embedded_broker, registry, db_path, hub):
    dev = CommandDevice(embedded_broker.port, add_device(registry, "dev-ls")).connect()
    try:
        code, out, _ = fleet(db_path, embedded_broker.port, "send", "dev-ls", "ping", "--json")
        cid = json.loads(out)[0]["id"]
    finally:
        dev.disconnect()
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["--db", str(db_path), "commands", "dev-ls", "--json"]).stdout)
    assert [c["id"] for c in listed] == [cid] and listed[0]["state"] == "succeeded"
    shown = json.loads(runner.invoke(cli, ["--db", str(db_path), "commands", "show", cid, "--json"]).stdout)
    assert [h["state"] for h in shown["history"]] == ["queued", "sent", "delivered", "succeeded"]
    only_failed = json.loads(runner.invoke(cli, ["--db", str(db_path), "commands", "--state", "failed", "--json"]).stdout)
    assert only_failed == []
