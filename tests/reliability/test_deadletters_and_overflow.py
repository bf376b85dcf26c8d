"""Dead letters and a buffer overflow in the same run, each accounted for (firmware_protocol.md 5.6).

Half the devices send 1 message in 10 with a reading the hub refuses; the broker then goes away,
and when it is back the hub stays away until the devices' small buffers have overflowed (no
watermark comes), so they drop their oldest unconfirmed messages and declare them. The audit (ledger vs. database): every message is stored once, or dead-lettered
once under its seq, or recorded as dropped by device; nothing missing, nothing duplicated; and
the watermark of every device caught up with what it sent (it never stuck below a dead letter).
"""

from __future__ import annotations

import time
from pathlib import Path

from reliability_harness import finish, provision_fleet, sim_settings, stored_count
from support import db_rows, wait_for

from broker.background import BackgroundBroker
from broker.config import BrokerSettings
from broker.server import free_port
from device_sim.background import BackgroundFleet
from device_sim.faults import FaultKind

DEVICES = 10
OVERFLOWED = DEVICES
"""The hub stays away until the devices have dropped this many messages from their full 12-message buffers.

The simulator produces only while connected, so a broker outage alone overflows nothing; the test used to rely on
the hub reconnecting more slowly than the devices after the broker came back, and failed when it did not."""


def test_dead_letters_and_overflow_are_each_accounted_for(tmp_path: Path, db_path: Path, start_hub) -> None:  # type: ignore[no-untyped-def]
    settings = BrokerSettings(port=free_port(), db=db_path)
    broker = BackgroundBroker(settings).start()
    ledger = tmp_path / "ledger.db"
    plan = {i: frozenset({FaultKind.DEAD_LETTER}) for i in range(0, DEVICES, 2)}
    try:
        hub = start_hub(settings.port)
        sim = BackgroundFleet(sim_settings(settings.port, DEVICES, ledger, buffer_size=12, fault_every=10),
                              provision_fleet(db_path, DEVICES), fault_plan=plan).start()
        try:
            assert wait_for(lambda: stored_count(db_path) >= DEVICES * 20, 30)
            broker.stop()
            hub.stop()
            broker = BackgroundBroker(settings).start()
            # the devices reconnect, re-send and go on producing; with no hub, no watermark frees their buffers
            assert wait_for(lambda: sim.summary().dropped >= OVERFLOWED, 60), "no buffer overflowed without the hub"
            start_hub(settings.port)
            before = stored_count(db_path)
            assert wait_for(lambda: stored_count(db_path) >= before + DEVICES * 20, 30)
        finally:
            result, summary = finish(sim, ledger, db_path, time.time())
    finally:
        broker.stop()
    print(f"dead letters + overflow: {result.line()} dropped={summary.dropped} abandoned={summary.abandoned} "
          f"resent={summary.resent}")
    assert result.ok, result.line()
    assert not result.missing and not result.duplicated
    assert result.deadlettered > 0 and result.deadletter_stored > 0
    assert result.overflowed > 0 and result.overflow_dropped > 0, result.line()
    dead_without_seq = db_rows(db_path, "SELECT COUNT(*) FROM deadletters WHERE seq IS NULL")[0][0]
    assert dead_without_seq == 0  # every refused message named its seq and was dealt with under it
