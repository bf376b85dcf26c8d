"""Alarm storage: transitions folded per batch, acknowledgements, rule removal, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from hub.alarm_service import AlarmService
from hub.alarms import ack_alarm, list_alarms, show_alarm
from hub.config import HubSettings
from hub.rules import RuleKind, add_rule, list_rules, make_rule, remove_rule
from hub.storage import open_database
from hub.storage.alarms import AlarmStore


def service(db: Path) -> tuple[AlarmService, AlarmStore]:
    svc = AlarmService(HubSettings(db=db))
    store = AlarmStore(open_database(db))
    svc.engine.set_rules([make_rule(name="hot", kind=RuleKind.ABOVE, metric="temperature", threshold=40, clear=38)])
    return svc, store


def test_a_storm_of_crossings_in_one_batch_is_one_alarm_and_a_few_history_rows(tmp_path: Path) -> None:
    svc, store = service(tmp_path / "fleet.db")
    rows = [("d1", 1, i, 0, "temperature", 41.0 if i % 2 else 37.0, 0.0, 100.0 + i, 0) for i in range(1, 200)]
    svc.engine.on_readings(rows)
    svc._apply(store, svc.engine.take())
    (alarm,) = list_alarms(tmp_path / "fleet.db")
    assert alarm["flaps"] == svc.engine.counters.flaps == 99 and alarm["state"] == "active"
    history = show_alarm(tmp_path / "fleet.db", alarm["id"])["history"]
    assert [h["state"] for h in history] == ["active", "active"]  # raised, then "raised again 99 times"
    assert "99 times" in history[1]["detail"]
    svc.engine.on_readings([("d1", 1, 300, 0, "temperature", 39.0, 0.0, 400.0, 0),   # in the hysteresis band
                            ("d1", 1, 301, 0, "temperature", 37.5, 0.0, 401.0, 0)])  # below the clear threshold
    svc._apply(store, svc.engine.take())
    assert show_alarm(tmp_path / "fleet.db", alarm["id"])["state"] == "cleared"
    store.conn.close()


def test_acknowledge_then_clear_keeps_both_times_and_removing_a_rule_clears_its_alarms(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    svc, store = service(db)
    add_rule(db, make_rule(name="hot", kind=RuleKind.ABOVE, metric="temperature", threshold=40, clear=38))
    svc.engine.on_readings([("d1", 1, 1, 0, "temperature", 45.0, 0.0, 10.0, 0),
                            ("d2", 1, 1, 0, "temperature", 45.0, 0.0, 10.0, 0)])
    svc._apply(store, svc.engine.take())
    first, second = sorted(a["id"] for a in list_alarms(db, active=True))
    assert ack_alarm(db, first, "ops", now=20.0)["state"] == "acknowledged"
    assert ack_alarm(db, first, "ops", now=30.0)["acked_at"] == 20.0  # a second ack changes nothing
    svc.engine.on_readings([("d1", 1, 2, 0, "temperature", 30.0, 0.0, 40.0, 0)])
    svc._apply(store, svc.engine.take())
    shown = show_alarm(db, first)
    assert (shown["state"], shown["acked_at"], shown["acked_by"], shown["cleared_at"]) == ("cleared", 20.0, "ops", 40.0)
    assert [h["state"] for h in shown["history"]] == ["active", "acknowledged", "cleared"]
    assert remove_rule(db, "hot") == 1 and list_rules(db) == []
    assert show_alarm(db, second)["history"][-1]["detail"] == "rule removed"
    assert list_alarms(db, active=True) == []
    store.conn.close()
