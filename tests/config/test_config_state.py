"""The hub's configuration state in SQLite (schema 7) and what it sends: pending keys, versions, refusals, resets."""

from __future__ import annotations

from pathlib import Path

from hub.device_config import pending, plan
from hub.storage import ConfigStore, open_database
from protocol.config import Description

DESC = Description(config=["report_s", "int 1..86400", "deadband", "float 0..10", "mode", "text"])


def store(tmp_path: Path) -> ConfigStore:
    return ConfigStore(open_database(tmp_path / "fleet.db"))


def test_only_the_difference_from_the_last_report_is_sent_with_the_latest_version(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.set_desired(["d1"], {"report_s": 30, "mode": "eco"}, now=1.0)
    s.set_desired(["d1"], {"report_s": 60}, now=2.0)  # a second change before the device heard of the first
    dev = s.get("d1")
    assert dev is not None and dev.version == 2
    assert pending(dev) == {"report_s": 60, "mode": "eco"}
    msg = plan(dev, DESC, "cbor")
    assert msg is not None and msg.version == 2 and msg.pairs() == [(2, "eco"), (0, 60)]  # indexes in CBOR
    named = plan(dev, DESC, "json")
    assert named is not None and named.pairs() == [("mode", "eco"), ("report_s", 60)]  # names in JSON
    assert plan(dev, None, "cbor").pairs() == [("mode", "eco"), ("report_s", 60)]  # type: ignore[union-attr]

    assert s.record_report("d1", 2, {"report_s": 60.0}, {"mode": "not on this board"}, now=3.0)
    dev = s.get("d1")
    assert dev is not None and pending(dev) == {} and plan(dev, DESC, "cbor") is None  # 60.0 == 60; refused is settled
    assert dev.keys["mode"].refused_reason == "not on this board"

    # a stale report (older version) changes nothing; a new value for the refused key is pending again
    assert not s.record_report("d1", 1, {"report_s": 30}, {}, now=4.0)
    assert s.get("d1").keys["report_s"].reported == 60.0  # type: ignore[union-attr]
    s.set_desired(["d1"], {"mode": "normal"}, now=5.0)
    assert pending(s.get("d1")) == {"mode": "normal"}  # type: ignore[arg-type]


def test_a_birth_with_a_lower_config_version_makes_everything_pending_again(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.set_desired(["d1"], {"report_s": 30, "deadband": 0.5}, now=1.0)
    s.record_report("d1", 1, {"report_s": 30, "deadband": 0.5}, {}, now=2.0)
    assert not s.record_birth("d1", "", 1)  # the same version: in sync, nothing to send
    assert pending(s.get("d1")) == {}  # type: ignore[arg-type]
    assert s.record_birth("d1", "", 0)  # factory reset: the device lost its configuration
    assert pending(s.get("d1")) == {"report_s": 30, "deadband": 0.5}  # type: ignore[arg-type]
    assert s.unsent() == ["d1"]


def test_true_is_not_one_and_text_is_not_a_number(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.set_desired(["d1"], {"a": 1, "b": "30"}, now=1.0)
    s.record_report("d1", 1, {"a": True, "b": 30}, {}, now=2.0)
    assert pending(s.get("d1")) == {"a": 1, "b": "30"}  # type: ignore[arg-type]


def test_one_device_cannot_fill_the_description_table(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.save_description("a" * 16, "{}", "d1", now=1.0)
    s.record_birth("d2", "a" * 16, 0)  # another device of the same kind names it
    for i in range(50):
        s.save_description(f"{i:016x}", "{}", "d1", now=2.0)
    count = s.conn.execute("SELECT count(*) FROM descriptions").fetchone()[0]
    assert count == 2  # the one a birth names, and the newest
