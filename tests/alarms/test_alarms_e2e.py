"""Alarms end to end: real broker, hub and simulator; rules and alarms through the ``fleet`` CLI."""

from __future__ import annotations

import re
import sqlite3
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import load_factor, wait_for

from device_sim.background import BackgroundFleet
from device_sim.fleet import Credentials, device_id, provision
from device_sim.settings import SimSettings


def provision_fleet(db: Path, n: int) -> Credentials:
    return provision(db, [device_id("sim", i) for i in range(1, n + 1)])


def settings_for(port: int, n: int, **kw: Any) -> SimSettings:
    """A brisk simulated fleet for tests."""
    return SimSettings(**({"devices": n, "port": port, "reconnect_delay": 0.2} | kw))


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def readings_of(db: Path, device: str) -> int:
    return rows(db, "SELECT COUNT(*) FROM readings WHERE device_id = ?", (device,))[0][0]


def test_an_alarm_raises_is_acknowledged_clears_and_shows_its_history(embedded_broker, db_path, start_hub, fleet):
    hub = start_hub(embedded_broker.port, alarm_check_s=0.2, metrics_port=0)
    creds = provision_fleet(db_path, 1)
    # silence long enough that a loaded machine's pauses in a 10 Hz stream do not count as one
    silence = f"{max(3, round(3 * load_factor()))}s"
    assert "rule added" in fleet("rules", "add", "quiet", "--no-data", "--for", silence, "--severity", "critical")
    assert [r["name"] for r in fleet("rules", "list")] == ["quiet"]  # piped: JSON without asking
    sim = BackgroundFleet(settings_for(embedded_broker.port, 1, profile="env", rate=10.0), creds).start()
    try:
        assert wait_for(lambda: readings_of(db_path, "sim-00001") >= 20, 20)
        # data flows: the engine has ticked several times over it (marker: a tick's open-alarm count) and raised nothing
        assert fleet("alarms") == []
    finally:
        sim.stop()
    assert wait_for(lambda: len(fleet("alarms", "--active")) == 1, 20)  # silent for the window: raised
    (alarm,) = fleet("alarms", "--active")
    assert (alarm["rule"], alarm["device_id"], alarm["state"], alarm["severity"]) == (
        "quiet", "sim-00001", "active", "critical")
    acked = fleet("alarms", "ack", str(alarm["id"]), "--json")
    assert acked["state"] == "acknowledged" and acked["acked_at"] >= alarm["raised_at"]
    assert fleet("alarms", "--active")[0]["state"] == "acknowledged"
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{hub.metrics_port}/metrics", timeout=10).read().decode()
    assert "fleet_alarms_raised_total 1.0" in metrics
    sim = BackgroundFleet(settings_for(embedded_broker.port, 1, profile="env", rate=10.0), creds).start()
    try:
        assert wait_for(lambda: fleet("alarms", "show", str(alarm["id"]))["state"] == "cleared", 20)
        shown = fleet("alarms", "show", str(alarm["id"]))  # while data flows (silence would raise it again)
        assert fleet("alarms", "--active") == []
    finally:
        sim.stop()
    assert [h["state"] for h in shown["history"]] == ["active", "acknowledged", "cleared"]
    assert shown["raised_at"] <= shown["acked_at"] <= shown["cleared_at"]
    assert len(fleet("alarms")) == 1
    missing = fleet("alarms", "show", "999", expect=8)
    assert "no alarm 999" in missing and "Traceback" not in missing


def test_threshold_alarm_from_simulated_values_with_hysteresis_and_an_action(embedded_broker, db_path, start_hub,
                                                                             fleet):
    start_hub(embedded_broker.port, alarm_check_s=0.2)
    creds = provision_fleet(db_path, 1)
    # a simulated vehicle stops now and then (speed 0) and speeds up again over a few samples
    fleet("rules", "add", "stopped", "--metric", "speed_kmh", "--below", "5", "--clear-above", "25",
          "--action", "ping")  # the simulator describes ping with no arguments: an extra one is refused
    sim = BackgroundFleet(settings_for(embedded_broker.port, 1, profile="gps", rate=10.0), creds).start()
    try:
        assert wait_for(lambda: any(h["state"] == "cleared" for a in fleet("alarms")
                                    for h in fleet("alarms", "show", str(a["id"]))["history"]), 60)
    finally:
        sim.stop()
    alarm = fleet("alarms")[-1]  # the first one raised
    history = fleet("alarms", "show", str(alarm["id"]))["history"]
    raised = history[0]
    cleared = next(h for h in history if h["state"] == "cleared")
    assert raised["state"] == "active" and raised["value"] < 5
    assert cleared["value"] > 25  # not merely back above 5: the clear threshold
    action = next(h for h in history if h["detail"].startswith("action:"))
    assert "command ping sent as" in action["detail"]
    command_id = action["detail"].rsplit(" ", 1)[1]
    assert rows(db_path, "SELECT device_id, name, args FROM commands WHERE id = ?", (command_id,)) == [
        ("sim-00001", "ping", "{}")]
    # a stop soon after another re-opens the alarm, counted as a flap (several in one batch: one row, "N times")
    flaps = [re.match(r"raised again(?: (\d+) times)? \(flap\)", h["detail"]) for h in history]
    assert fleet("alarms", "show", str(alarm["id"]))["flaps"] == sum(int(m.group(1) or 1) for m in flaps if m)


def test_sleepy_device_sleeps_between_wakes_and_is_offline_only_when_it_misses_one(embedded_broker, db_path,
                                                                                   start_hub, fleet):
    start_hub(embedded_broker.port, alarm_check_s=0.2, staleness_min_s=0.5, presence_check_s=0.2)
    creds = provision_fleet(db_path, 1)
    fleet("rules", "add", "gone", "--offline", "--for", "0s")
    # declares a 4 s wake period, sleeps 3 s; heartbeat 1 s: silent 2.5 s while awake would be stale
    settings = settings_for(embedded_broker.port, 1, profile="env", rate=5.0, heartbeat_s=1, sleep_s=4,
                            wake_ticks=2, sleep_fraction=0.75)
    sim = BackgroundFleet(settings, creds).start()

    def events() -> list[tuple[str, str]]:
        return [(s, r) for s, r in rows(db_path, "SELECT state, reason FROM presence_events WHERE device_id = ?"
                                                 " ORDER BY id", ("sim-00001",))]

    try:
        # three wakes after a sleep each: the device kept its schedule
        assert wait_for(lambda: events().count(("online", "wake")) >= 3, 60)
        assert any(state == "sleeping" for state, _ in events())
        assert not any(state == "offline" for state, _ in events())
        assert fleet("alarms") == []
        assert rows(db_path, "SELECT sleep_s FROM devices WHERE device_id = 'sim-00001'") == [(4,)]
    finally:
        sim.stop()
    # it stops waking: sleeping until its wake is overdue (max(4 x 1.25, 4 + 0.5) s), then offline
    assert wait_for(lambda: ("offline", "missed_wake") in events(), 30)
    assert wait_for(lambda: [a["rule"] for a in fleet("alarms", "--active")] == ["gone"], 20)
