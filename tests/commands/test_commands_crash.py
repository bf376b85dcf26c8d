"""The hub is killed with SIGKILL while commands are in flight; after a restart they still complete."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.main import cli
from command_device import CommandDevice
from hub.storage import CommandStore
from protocol.models import CommandState
from support import HubProcess, add_device, wait_for


def test_queued_command_survives_hub_sigkill(embedded_broker, registry, db_path, tmp_path):
    port = embedded_broker.port
    hub = HubProcess(db_path, port, tmp_path / "hub.log")
    creds = add_device(registry, "dev-k")
    hub.start()
    try:
        store = CommandStore(str(db_path))
        res = None
        for _ in range(50):  # the hub subprocess needs a moment before it answers; one request id, so no duplicate
            res = CliRunner().invoke(cli, ["--db", str(db_path), "send", "dev-k", "ping", "--no-wait", "--json",
                                           "--ttl", "2m", "--request-id", "r-crash-1",
                                           "--broker", f"mqtt://127.0.0.1:{port}"])
            if res.exit_code == 7:  # device offline: queued
                break
        assert res is not None and res.exit_code == 7, res.output if res else ""
        cid = json.loads(res.stdout)[0]["id"]
        assert store.get(cid).state is CommandState.QUEUED  # the device is offline
        hub.kill()

        hub.start()
        device = CommandDevice(port, creds).connect()
        try:
            assert wait_for(lambda: store.get(cid).state is CommandState.SUCCEEDED, timeout=20), hub.log.read_text()[-2000:]
            assert device.executed == [cid]
        finally:
            device.disconnect()
    finally:
        hub.stop()


def test_sent_but_unacknowledged_command_is_resent_after_hub_restart(embedded_broker, registry, db_path, tmp_path):
    port = embedded_broker.port
    hub = HubProcess(db_path, port, tmp_path / "hub.log")
    device = CommandDevice(port, add_device(registry, "dev-s"), ignore_first=1).connect()
    hub.start()
    try:
        store = CommandStore(str(db_path))
        res = None
        for _ in range(50):
            res = CliRunner().invoke(cli, ["--db", str(db_path), "send", "dev-s", "ping", "--no-wait", "--json",
                                           "--broker", f"mqtt://127.0.0.1:{port}"])
            if res.exit_code == 0:
                break
        assert res is not None and res.exit_code == 0
        cid = json.loads(res.stdout)[0]["id"]
        assert wait_for(lambda: cid in device.received, timeout=10)  # delivered once, silently dropped
        hub.kill()
        assert store.get(cid).state is CommandState.SENT
        hub.start()
        assert wait_for(lambda: store.get(cid).state is CommandState.SUCCEEDED, timeout=30), hub.log.read_text()[-2000:]
        assert device.executed == [cid]
    finally:
        device.disconnect()
        hub.stop()
