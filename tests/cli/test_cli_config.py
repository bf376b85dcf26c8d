"""The TOML file reaches every command, including those with a dash in their name."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from broker.registry import Registry, Role
from cli.config import load_default_map
from cli.main import cli


def test_tables_keep_command_names_and_keys_take_parameter_names(tmp_path: Path) -> None:
    toml = tmp_path / "fleet.toml"
    toml.write_text('db = "x.db"\n[device-check]\ndevice-id = "d1"\n[device_check_2]\nn = 1\n'
                    '[broker]\nmax-payload-bytes = 512\n[broker.export-acl]\nout-dir = "out"\n')
    assert load_default_map(toml) == {
        "db": "x.db",
        "device-check": {"device_id": "d1"},
        "device-check-2": {"n": 1},
        "broker": {"max_payload_bytes": 512, "export-acl": {"out_dir": "out"}},
    }


def test_a_dashed_subcommand_reads_its_table(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "fleet.db"
    Registry(db).add("dev-1", Role.DEVICE)
    out = tmp_path / "from-toml"
    (tmp_path / "fleet.toml").write_text(f'[broker.export-acl]\nout-dir = "{out}"\n')
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["--db", str(db), "broker", "export-acl"],
                             default_map=load_default_map(tmp_path / "fleet.toml"))
    assert res.exit_code == 0, res.output
    assert (out / "mosquitto.acl").exists() and (out / "mosquitto.passwd").exists()
