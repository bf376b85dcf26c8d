"""Simulated devices raise alerts on their profile's thresholds; alerts share the seq stream and reach the hub."""

from __future__ import annotations

import sqlite3

from sim_helpers import provision_fleet, settings_for
from support import wait_for

from device_sim.background import BackgroundFleet
from device_sim.signals import AlertRule, Profile, make_signal


def test_rules_trip_once_and_rearm_past_their_hysteresis():
    low = AlertRule("battery_low", "battery_v", 3.45, 3.6)
    assert low.trips(3.4) and not low.trips(3.5) and low.rearms(3.7) and not low.rearms(3.5)
    sig = make_signal(Profile.ENV, 1, 0)
    sig.alert_rules = (low,)
    sig._armed = {"battery_low": True}
    codes = [a[0] for v in (3.5, 3.4, 3.3, 3.5, 3.7, 3.4) for a in sig.alerts([("battery_v", v)])]
    assert codes == ["battery_low", "battery_low"]  # at 3.4, and again after it came back above 3.6


def test_same_seed_same_alerts():
    def run() -> list[tuple[str, str, str]]:
        sig = make_signal(Profile.POWER, 7, 3)
        return [a for _ in range(3000) for a in sig.alerts(sig.step(10.0))]

    first = run()
    assert first and first == run()


def test_alerts_reach_the_hub_in_the_devices_seq_stream(embedded_broker, registry, db_path, start_hub):
    hub = start_hub(embedded_broker.port)
    n = 4
    sim = BackgroundFleet(settings_for(embedded_broker.port, n, profile="power", rate=50.0, alerts=True),
                          provision_fleet(db_path, n)).start()

    def alerts() -> int:
        conn = sqlite3.connect(db_path)
        try:
            return conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        finally:
            conn.close()

    try:
        assert wait_for(lambda: alerts() >= 1, timeout=20)
    finally:
        sim.stop()
    conn = sqlite3.connect(db_path)
    try:
        codes = {c for (c,) in conn.execute("SELECT DISTINCT code FROM alerts")}
        open_gaps = conn.execute("SELECT COUNT(*) FROM gaps WHERE missing > 0").fetchone()[0]
        kinds = dict(conn.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall())
    finally:
        conn.close()
    assert codes == {"overload"}
    assert kinds.get("a", 0) == alerts() and kinds.get("t", 0) > 0
    assert open_gaps == 0  # an alert takes the next seq, so telemetry around it shows no hole
    assert hub.stats["deadletters"] == {}
