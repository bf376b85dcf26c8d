"""Fault 1: the hub is SIGKILLed mid-stream and restarted; the ledger finds nothing missing or doubled."""

from __future__ import annotations

import time
from pathlib import Path

from reliability_harness import finish, provision_fleet, sim_settings, stored_count
from support import wait_for

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet

DEVICES = 20


def test_hub_sigkill_mid_stream_loses_nothing(tmp_path: Path, db_path: Path, embedded_broker: BackgroundBroker,
                                              hub_subprocess) -> None:  # type: ignore[no-untyped-def]
    port = embedded_broker.port
    hub = hub_subprocess(port).start()
    hub.wait_started()
    ledger = tmp_path / "ledger.db"
    sim = BackgroundFleet(sim_settings(port, DEVICES, ledger), provision_fleet(db_path, DEVICES)).start()
    try:
        assert wait_for(lambda: stored_count(db_path) >= DEVICES * 20, 20), hub.log()
        hub.kill()
        killed_at = stored_count(db_path)
        time.sleep(1.5)  # devices keep producing; the broker queues for the hub's offline session
        restarted = hub_subprocess(port).start()
        restarted.wait_started()
        assert wait_for(lambda: stored_count(db_path) >= killed_at + DEVICES * 20, 20), restarted.log()
    finally:
        result, summary = finish(sim, ledger, db_path, time.time())
    print(f"hub SIGKILL: {result.line()} resent={summary.resent}")
    assert result.ok and result.covered > DEVICES * 40, result.line()
    assert result.overflow_dropped == 0, result.line()  # a buffer may overflow on a slow machine: nothing given up
