"""``fleet sim`` through click: provisioning, a bounded run, the --json summary, flag errors."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from click.testing import CliRunner

from broker.background import BackgroundBroker
from cli.main import cli
from device_sim.fleet import credentials_path


def test_fleet_sim_json_summary_and_reused_credentials(db_path: Path, embedded_broker: BackgroundBroker) -> None:
    args = ["--db", str(db_path), "sim", "--devices", "3", "--broker", f"mqtt://127.0.0.1:{embedded_broker.port}",
            "--duration", "2", "--rate", "5", "--encoding", "env=cbor", "--batch", "power=2", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["devices"] == 3 and summary["connects"] == 3 and summary["messages"] > 0
    creds = credentials_path(db_path)
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    first = json.loads(creds.read_text())["devices"]
    assert {d["boot"] for d in first.values()} == {1}
    result = CliRunner().invoke(cli, args)  # a rerun reuses the secrets and starts a new boot
    assert result.exit_code == 0, result.output
    second = json.loads(creds.read_text())["devices"]
    assert {k: v["secret"] for k, v in second.items()} == {k: v["secret"] for k, v in first.items()}
    assert {d["boot"] for d in second.values()} == {2}


def test_fleet_sim_rejects_bad_flags(db_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(db_path), "sim", "--fault", "gremlins=0.1"])
    assert result.exit_code != 0 and "unknown fault 'gremlins'" in result.output + str(result.exception)
    result = CliRunner().invoke(cli, ["--db", str(db_path), "sim", "--batch", "env=999"])
    assert result.exit_code != 0 and "profile env" in result.output + str(result.exception)
