"""Fault 3: 30% of the devices lose their connection at the same instant, several times, and reconnect at once."""

from __future__ import annotations

import time
from pathlib import Path

from reliability_harness import finish, provision_fleet, sim_settings, stored_count
from support import wait_for

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet
from device_sim.faults import FaultKind

DEVICES = 30
STORMS = 3


def test_thirty_percent_dropped_at_once_lose_nothing(tmp_path: Path, db_path: Path, embedded_broker: BackgroundBroker,
                                                     start_hub) -> None:  # type: ignore[no-untyped-def]
    port = embedded_broker.port
    start_hub(port)
    ledger = tmp_path / "ledger.db"
    sim = BackgroundFleet(sim_settings(port, DEVICES, ledger), provision_fleet(db_path, DEVICES)).start()
    try:
        assert wait_for(lambda: stored_count(db_path) >= DEVICES * 10, 20)
        victims = sim.fleet.ids()[: int(DEVICES * 0.3)]  # type: ignore[union-attr]
        for _ in range(STORMS):
            dropped = sim.abort_connections(victims)
            assert dropped >= len(victims) - 1
            # all of them are back (each sent a new birth) before the next storm
            target = sim.summary().connects + dropped
            assert wait_for(lambda: sim.summary().connects >= target, 15)
            time.sleep(0.5)
        before = stored_count(db_path)
        assert wait_for(lambda: stored_count(db_path) >= before + DEVICES * 10, 20)
    finally:
        result, summary = finish(sim, ledger, db_path, time.time())
    print(f"reconnect storm: {result.line()} reconnects={summary.reconnects} resent={summary.resent}")
    assert summary.reconnects >= STORMS * (len(victims) - 1)
    assert result.ok and result.covered > DEVICES * 30, result.line()
    assert result.overflow_dropped == 0, result.line()  # a buffer may overflow on a slow machine: nothing given up


def test_disconnect_storm_fault_loses_nothing(tmp_path: Path, db_path: Path, embedded_broker: BackgroundBroker,
                                              start_hub) -> None:  # type: ignore[no-untyped-def]
    """The simulator's own ``disconnect-storm`` fault: 30% drop their socket every second and come back."""
    port = embedded_broker.port
    start_hub(port)
    ledger = tmp_path / "ledger.db"
    settings = sim_settings(port, DEVICES, ledger, faults={FaultKind.DISCONNECT_STORM: 0.3})
    sim = BackgroundFleet(settings, provision_fleet(db_path, DEVICES)).start()
    try:
        assert wait_for(lambda: sim.summary().faults.get("disconnect-storm", 0) >= 3 * 9, 20)
    finally:
        result, summary = finish(sim, ledger, db_path, time.time())
    print(f"disconnect-storm fault: {result.line()} reconnects={summary.reconnects} resent={summary.resent}")
    assert result.ok and result.covered > DEVICES * 20, result.line()
    assert result.overflow_dropped == 0, result.line()  # a buffer may overflow on a slow machine: nothing given up
