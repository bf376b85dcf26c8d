"""``fleet sim --ota-fault ...``: firmware-update faults from the command line, the environment and fleet.toml."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support import wait_for

from broker.background import BackgroundBroker
from cli.config import load_default_map
from cli.main import cli
from device_sim.faults import OtaFault
from device_sim.fleet import device_id
from device_sim.ota import ota_plan
from hub.config import HubSettings
from hub.firmware import add_image, rollout_status, start_rollout
from hub.rollout import RolloutSettings
from hub.service import Hub
from hub.storage import FirmwareStore, PresenceStore, open_database


def _summary(stdout: str) -> dict[str, Any]:
    return json.loads(stdout[stdout.index("{"):])  # type: ignore[no-any-return]


def _sim(db: Path, port: int, *flags: str, env: dict[str, str] | None = None,
         default_map: dict[str, Any] | None = None) -> dict[str, Any]:
    args = ["--db", str(db), "sim", "--devices", "10", "--broker", f"mqtt://127.0.0.1:{port}", "--duration", "1",
            "--json", *flags]
    result = CliRunner().invoke(cli, args, env=env, default_map=default_map)
    assert result.exit_code == 0, result.output
    return _summary(result.stdout)


def test_ota_faults_come_from_flags_then_env_then_toml(db_path: Path, embedded_broker: BackgroundBroker,
                                                       tmp_path: Path) -> None:
    toml = tmp_path / "fleet.toml"
    toml.write_text('[sim]\nota-fault = ["refuse=0.3"]\nota-slow-delay = "2s"\n')
    default_map = load_default_map(toml)
    port = embedded_broker.port
    # the summary counts the devices carrying each fault: 10 devices, so the fraction shows which layer won
    assert _sim(db_path, port, default_map=default_map)["ota"] == {"fault:refuse": 3}
    env = {"FLEET_SIM_OTA_FAULT": "refuse=0.5 slow-download=0.2"}
    assert _sim(db_path, port, env=env, default_map=default_map)["ota"] == {"fault:refuse": 5, "fault:slow-download": 2}
    got = _sim(db_path, port, "--ota-fault", "bad-image=0.1", env=env, default_map=default_map)["ota"]
    assert got == {"fault:bad-image": 1}


def test_bad_ota_flags_are_one_line(db_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(db_path), "sim", "--ota-fault", "gremlins=0.1"])
    assert result.exit_code != 0 and "unknown fault 'gremlins'" in result.output
    assert "refuse" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["--db", str(db_path), "sim", "--ota-fault", "bad-image=2"])
    assert result.exit_code != 0 and "the fraction must lie in 0..1" in result.output
    result = CliRunner().invoke(cli, ["--db", str(db_path), "sim", "--ota-stall", "soon"])
    assert result.exit_code != 0 and "not a duration" in result.output


@pytest.mark.slow
def test_a_rollout_meets_the_faults_asked_for_on_the_command_line(db_path: Path, embedded_broker: BackgroundBroker,
                                                                  tmp_path: Path) -> None:
    n, seed = 8, 3
    ids = [device_id("cli", i) for i in range(1, n + 1)]
    fractions = {OtaFault.BAD_IMAGE: 0.125, OtaFault.REFUSE: 0.125, OtaFault.SLOW_DOWNLOAD: 0.25,
                 OtaFault.CORRUPT_CHUNK: 0.125, OtaFault.OFFLINE: 0.125}
    faults = ota_plan(ids, fractions, seed).faults  # the same reproducible choice the simulator makes
    image = tmp_path / "fw.bin"
    image.write_bytes(os.urandom(12_000))
    add_image(db_path, image, "sim-2.0.0")
    hub = Hub(HubSettings(db=db_path, broker=f"mqtt://127.0.0.1:{embedded_broker.port}", presence_check_s=0.5,
                          staleness_min_s=60.0), rollout_settings=RolloutSettings(tick_s=0.1, device_timeout_s=60))
    hub.start(timeout=15)
    cmd = [sys.executable, "-c", "from cli.main import main; main()", "--db", str(db_path), "sim", "--devices", str(n),
           "--prefix", "cli", "--seed", str(seed), "--broker", f"mqtt://127.0.0.1:{embedded_broker.port}",
           "--rate", "1", "--duration", "120", "--json", "--ota-offline-for", "6s", "--ota-slow-delay", "0.3s",
           "--ota-stall", "5s", "--ota-chunk-size", "2000",
           *[a for kind, f in fractions.items() for a in ("--ota-fault", f"{kind.value}={f}")]]
    sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    try:
        def online() -> set[str]:
            conn = open_database(db_path)
            try:
                return {d.device_id for d in PresenceStore(conn).load_devices() if d.state == "online"}
            finally:
                conn.close()

        offline = {d for d, k in faults.items() if OtaFault.OFFLINE in k}
        assert wait_for(lambda: set(ids) - offline <= online(), 60), online()
        assert not offline & online()  # held back by --ota-offline-for
        rid = start_rollout(db_path, "sim-2.0.0", "sim", (1.0,), max_failure_rate=1.0, max_concurrent=n,
                            bandwidth=1e6)
        assert wait_for(lambda: rollout_status(db_path, rid)[0].state == "completed", 90), rollout_status(db_path, rid)
        conn = open_database(db_path)
        try:
            rows = {d.device_id: d for d in FirmwareStore(conn).rollout_devices(rid)}
        finally:
            conn.close()
        for dev in ids:
            kinds = faults.get(dev, frozenset())
            if OtaFault.REFUSE in kinds:
                assert rows[dev].state == "failed" and "declined by the device" in rows[dev].detail, rows[dev]
            elif OtaFault.BAD_IMAGE in kinds:
                assert rows[dev].state == "rolled_back", rows[dev]
            else:  # slow, corrupt, offline (it came back by itself) and healthy devices all updated
                assert rows[dev].state == "succeeded", (dev, kinds, rows[dev])
        sim.send_signal(signal.SIGINT)
        out, err = sim.communicate(timeout=30)
        assert sim.returncode == 0, err.decode()[-2000:]
        ota = _summary(out.decode())["ota"]
        expected_updated = sum(1 for d in ids if not faults.get(d, frozenset()) & {OtaFault.REFUSE, OtaFault.BAD_IMAGE})
        assert ota["updated"] == expected_updated and ota["rolled_back"] == 1 and ota["refused"] >= 1
        assert ota["refetched"] >= 1  # the corrupt chunk was fetched again
        assert {k: v for k, v in ota.items() if k.startswith("fault:")} == {
            f"fault:{kind.value}": sum(1 for k in faults.values() if kind in k) for kind in fractions}
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait(10)
        hub.stop()
