"""Fault 4: devices that skip seqs (packet loss) and publish messages twice (duplicates).

A skipped seq was never sent: it is outside the guarantee and must show as an open gap, not as
a stored message. A duplicate is stored once. Everything else is stored exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path

from reliability_harness import finish, provision_fleet, sim_settings
from support import db_rows, wait_for

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet
from device_sim.faults import FaultKind

DEVICES = 12


def test_packet_loss_shows_as_gaps_and_duplicates_are_stored_once(tmp_path: Path, db_path: Path,
                                                                  embedded_broker: BackgroundBroker,
                                                                  start_hub) -> None:  # type: ignore[no-untyped-def]
    port = embedded_broker.port
    hub = start_hub(port)
    ledger = tmp_path / "ledger.db"
    plan = {i: frozenset({FaultKind.PACKET_LOSS}) for i in range(0, 4)}
    plan |= {i: frozenset({FaultKind.DUPLICATE}) for i in range(4, 8)}
    sim = BackgroundFleet(sim_settings(port, DEVICES, ledger), provision_fleet(db_path, DEVICES), fault_plan=plan).start()
    try:
        assert wait_for(lambda: sim.summary().faults.get("packet-loss", 0) >= 20
                        and sim.summary().faults.get("duplicate", 0) >= 20, 20)
    finally:
        result, summary = finish(sim, ledger, db_path, time.time())
    print(f"packet loss + duplicates: {result.line()} faults={summary.faults} hub={hub.stats}")
    assert result.ok, result.line()
    assert result.lost >= 20 and result.covered > DEVICES * 20
    assert hub.stats["duplicates"] >= summary.faults["duplicate"]
    open_gaps = db_rows(db_path, "SELECT COALESCE(SUM(missing), 0) FROM gaps WHERE missing > 0")[0][0]
    assert open_gaps == result.lost - result.lost_trailing  # every skipped seq, and nothing else, is an open gap
