"""`fleet config` without a hub: targets, listings as JSON when piped, one readable line for every refusal."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from broker.registry import Registry, Role
from cli.main import cli


def fleet(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_set_for_a_group_or_all_bumps_each_devices_version(db_path: Path, registry: Registry) -> None:
    for dev, group in (("a1", "north"), ("a2", "north"), ("b1", "south")):
        registry.add(dev, Role.DEVICE, group=group)
    code, out, err = fleet(db_path, "config", "set", "--group", "north", "report_s=30")
    assert code == 0, err
    assert [(r["device_id"], r["version"]) for r in json.loads(out)] == [("a1", 1), ("a2", 1)]  # piped: JSON
    code, out, _ = fleet(db_path, "config", "set", "--all", "mode=eco", "--json")
    assert [(r["device_id"], r["version"]) for r in json.loads(out)] == [("a1", 2), ("a2", 2), ("b1", 1)]
    code, out, _ = fleet(db_path, "config", "show", "a1")
    view = json.loads(out)[0]
    assert view["pending"] == {"mode": "eco", "report_s": 30} and view["version"] == 2 and not view["in_sync"]
    code, out, _ = fleet(db_path, "config")
    assert [r["device_id"] for r in json.loads(out)] == ["a1", "a2", "b1"]


def test_refusals_are_one_line_and_change_nothing(db_path: Path, registry: Registry) -> None:
    registry.add("a1")
    cases = [
        (("config", "set", "ghost", "x=1"), "unknown device 'ghost'"),
        (("config", "set", "--group", "nowhere", "x=1"), "no devices in group 'nowhere'"),
        (("config", "set", "a1", "x" * 40 + "=1"), "cannot be sent to a device"),
        (("config", "set", "a1", "nonsense"), "is not key=value"),
        (("config", "show", "ghost"), "unknown device 'ghost'"),
    ]
    for args, words in cases:
        code, out, err = fleet(db_path, *args)
        assert code != 0 and words in err and len(err.strip().splitlines()) == 1, (args, err)
    code, out, _ = fleet(db_path, "config", "show", "a1", "--json")
    assert json.loads(out)[0]["version"] == 0 and json.loads(out)[0]["keys"] == []
