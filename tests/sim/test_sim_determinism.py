"""The same seed gives the same readings: signal generators, and the ledger of a short run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sim_helpers import HubSubscriber, provision_fleet, settings_for
from support import wait_progress

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet
from device_sim.signals import Profile, make_signal
from protocol import MessageClass, StatusState, decode_status, metric_by_name


def series(profile: Profile, seed: int, index: int, steps: int = 500, dt: float = 60.0) -> list[list[tuple[str, float]]]:
    sig = make_signal(profile, seed, index)
    return [sig.step(dt) for _ in range(steps)]


def test_signals_are_reproducible_and_within_metric_ranges() -> None:
    for profile in Profile:
        a = series(profile, seed=42, index=3)
        assert a == series(profile, seed=42, index=3)
        assert a != series(profile, seed=43, index=3)
        assert a != series(profile, seed=42, index=4)
        for sample in a:
            for metric, value in sample:
                m = metric_by_name(metric)
                assert m is not None and m.accepts(value), (metric, value)


def test_signals_look_like_their_devices() -> None:
    env = series(Profile.ENV, 1, 0, steps=24 * 60, dt=60.0)  # one simulated day, a sample a minute
    temps = [dict(s)["temperature"] for s in env]
    assert 3.0 < max(temps) - min(temps) < 20.0  # a daily swing, not noise only
    power = series(Profile.POWER, 1, 0, steps=1000, dt=10.0)
    energy = [dict(s)["energy_wh"] for s in power]
    assert all(b >= a for a, b in zip(energy, energy[1:], strict=False))  # a counter never goes back
    watts = sorted(dict(s)["power_w"] for s in power)
    assert watts[-1] > 2.5 * watts[len(watts) // 2]  # spikes
    gps = series(Profile.GPS, 1, 0, steps=600, dt=1.0)
    lat = [dict(s)["lat"] for s in gps]
    assert 0 < abs(lat[-1] - lat[0]) < 1.0  # moves, but at road speed


def ledger_values(path: Path) -> dict[tuple[str, int], str]:
    with sqlite3.connect(path) as db:
        return {(d, q): r for d, q, r in db.execute("SELECT device, seq, readings FROM messages")}


def offline_count(hub: HubSubscriber) -> int:
    return sum(decode_status(s.payload).state is StatusState.OFFLINE for s in hub.of(MessageClass.STATUS))


def run_until(hub: HubSubscriber, sim: BackgroundFleet, per_device: int, devices: int = 3) -> None:
    """Wait for ``per_device`` telemetry messages from each device of this run, stop, wait for the goodbyes.

    Events, not a fixed deadline (a 10 s timeout failed at load 17): the count of this run starts
    after the previous run's offline statuses arrived, so its late telemetry cannot be counted here.
    """
    before = len(hub.of(MessageClass.TELEMETRY))
    offline = offline_count(hub)

    def least() -> int:
        counts: dict[str, int] = {}
        for s in hub.of(MessageClass.TELEMETRY)[before:]:
            counts[s.device] = counts.get(s.device, 0) + 1
        return min(counts.values()) if len(counts) == devices else 0

    got = wait_progress(least, per_device)
    sim.stop()
    assert got >= per_device, f"only {got} telemetry messages from the slowest device"
    assert wait_progress(lambda: offline_count(hub) - offline, devices) >= devices, "goodbyes missing"


def test_same_seed_same_ledger(tmp_path: Path, db_path: Path, embedded_broker: BackgroundBroker,
                               hub: HubSubscriber) -> None:
    creds = provision_fleet(db_path, 3)
    runs = []
    for run in range(2):
        ledger = tmp_path / f"ledger-{run}.db"
        sim = BackgroundFleet(settings_for(embedded_broker.port, 3, seed=99, rate=10.0, ledger=ledger), creds).start()
        run_until(hub, sim, 10)
        runs.append(ledger_values(ledger))
    common = runs[0].keys() & runs[1].keys()
    assert len(common) >= 24
    assert all(runs[0][k] == runs[1][k] for k in common)
    assert all(json.loads(v) for v in runs[0].values())
    # a different seed gives different readings
    ledger = tmp_path / "ledger-other.db"
    sim = BackgroundFleet(settings_for(embedded_broker.port, 3, seed=100, rate=10.0, ledger=ledger), creds).start()
    run_until(hub, sim, 5)
    other = ledger_values(ledger)
    assert any(other[k] != runs[0][k] for k in other.keys() & runs[0].keys())
