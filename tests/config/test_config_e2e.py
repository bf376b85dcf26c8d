"""Device configuration end to end: `fleet config` -> hub -> real broker -> simulated device -> report -> SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from support import wait_for

from broker.background import BackgroundBroker
from cli.main import cli
from device_sim.background import BackgroundFleet
from device_sim.fleet import device_id, provision
from device_sim.settings import Behaviour, SimSettings
from hub.service import Hub
from hub.storage import ConfigStore, open_database

DEV = "cfg-00001"


def fleet(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def sim_settings(port: int, encoding: str = "cbor") -> SimSettings:
    return SimSettings(devices=1, prefix="cfg", port=port, rate=5.0, profile="env", reconnect_delay=0.2,
                       behaviour={"env": Behaviour(encoding=encoding)})  # type: ignore[dict-item]


def config_row(db: Path) -> Any:
    conn = open_database(db)
    try:
        store = ConfigStore(conn)
        return store.get(DEV), store.device_description(DEV)
    finally:
        conn.close()


def show(db: Path) -> dict[str, Any]:
    code, out, err = fleet(db, "config", "show", DEV, "--json")
    assert code == 0, err
    [view] = json.loads(out)
    return view  # type: ignore[no-any-return]


def test_offline_device_converges_on_its_next_connect_and_refuses_with_its_reason(
        db_path: Path, embedded_broker: BackgroundBroker, start_hub: Callable[..., Hub]) -> None:
    creds = provision(db_path, [device_id("cfg", 1)])
    hub = start_hub(embedded_broker.port)
    sim = BackgroundFleet(sim_settings(embedded_broker.port), creds).start()
    # the device describes itself once; the hub keeps the description under the hash its birth names
    assert wait_for(lambda: config_row(db_path)[1][1] is not None, timeout=15)
    sim.stop()
    assert wait_for(lambda: not hub.config.links[DEV].online, timeout=10)  # type: ignore[union-attr]

    # set while the device is offline: stored, pending, nothing sent
    code, out, err = fleet(db_path, "config", "set", DEV, "batch=4", "deadband=0.5", "mode=turbo", "--json")
    assert code == 0, err
    assert json.loads(out) == [{"device_id": DEV, "version": 1, "set": {"batch": 4, "deadband": 0.5, "mode": "turbo"}}]
    code, out, _ = fleet(db_path, "config", "--json")
    assert code == 0 and [r["device_id"] for r in json.loads(out)] == [DEV]
    assert show(db_path)["pending"] == {"batch": 4, "deadband": 0.5, "mode": "turbo"}
    assert hub.config.counters["sent"] == 0  # type: ignore[union-attr]

    # a second change while offline: the device will see one ConfigSet with the latest version
    assert fleet(db_path, "config", "set", DEV, "batch=8")[0] == 0
    sim = BackgroundFleet(sim_settings(embedded_broker.port), creds).start()
    try:
        assert wait_for(lambda: show(db_path)["reported_version"] == 2, timeout=15)
        view = show(db_path)
        keys = {k["key"]: k for k in view["keys"]}
        assert keys["batch"]["reported"] == 8 and keys["deadband"]["reported"] == 0.5
        assert keys["batch"]["applied_version"] == 2 and keys["batch"]["applied_at"]
        assert view["refused"] == {"mode": "mode 'turbo' is not one of eco, normal, boost"}
        assert view["pending"] == {}
        device = sim.call(lambda: sim.fleet.device(DEV))  # type: ignore[attr-defined]
        assert (device.batch, device.deadband, device.config.version) == (8, 0.5, 2)
        assert hub.config.counters["sent"] == 1  # type: ignore[union-attr]  # one ConfigSet, not one per version

        # the operator sees the refusal with the device's reason, on a terminal and in a pipe
        code, out, _ = fleet(db_path, "config", "--json")
        assert code == 0 and json.loads(out)[0]["refused"] == {"mode": "mode 'turbo' is not one of eco, normal, boost"}

        # a value the description rules out never leaves the hub
        code, out, err = fleet(db_path, "config", "set", DEV, "batch=many")
        assert code != 0 and "batch must be an integer 1..64" in err and len(err.strip().splitlines()) == 1
        assert show(db_path)["version"] == 2

        # a good mode converges while the device is online
        assert fleet(db_path, "config", "set", DEV, "mode=eco")[0] == 0
        assert wait_for(lambda: show(db_path)["in_sync"] and not show(db_path)["refused"], timeout=10)
        code, out, _ = fleet(db_path, "config", "--json")
        assert json.loads(out) == []
    finally:
        sim.stop()


def test_send_refuses_a_wrong_argument_type_for_a_described_command(
        db_path: Path, embedded_broker: BackgroundBroker, start_hub: Callable[..., Hub]) -> None:
    creds = provision(db_path, [device_id("cfg", 1)])
    start_hub(embedded_broker.port)
    sim = BackgroundFleet(sim_settings(embedded_broker.port, "json"), creds).start()
    port = str(embedded_broker.port)
    try:
        assert wait_for(lambda: config_row(db_path)[1][1] is not None, timeout=15)
        code, out, err = fleet(db_path, "send", DEV, "set_interval", "--arg", "seconds=soon", "--json",
                               "--broker", f"mqtt://127.0.0.1:{port}")
        assert code != 0
        assert len(err.strip().splitlines()) == 1
        assert "seconds" in err and "must be a number 0.01..86400, not 'soon'" in err, err
        code, out, err = fleet(db_path, "send", DEV, "set_interval", "--arg", "seconds=2", "--json",
                               "--broker", f"mqtt://127.0.0.1:{port}", "--timeout", "20s")
        assert code == 0, err
        assert json.loads(out)[0]["state"] == "succeeded"
    finally:
        sim.stop()
