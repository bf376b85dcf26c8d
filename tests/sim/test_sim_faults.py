"""Each fault kind produces the effect the hub must catch, seen by a real hub-role subscriber."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sim_helpers import HubSubscriber, provision_fleet, settings_for
from support import wait_for

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet
from device_sim.faults import FaultKind, assign_faults, parse_fault
from protocol import (
    LIMITS,
    MessageClass,
    ProtocolError,
    StatusState,
    decode_status,
    decode_telemetry,
)

KINDS = list(FaultKind)
PLAN = {i: frozenset({k}) for i, k in enumerate(KINDS)}  # device index -> its one fault; the last device is clean
DEV = {k: f"sim-{i + 1:05d}" for i, k in enumerate(KINDS)}
CLEAN = f"sim-{len(KINDS) + 1:05d}"


def telemetry_seqs(hub: HubSubscriber, dev: str) -> list[int]:
    out = []
    for s in hub.of(MessageClass.TELEMETRY, dev):
        try:
            out.append(decode_telemetry(s.payload).seq)
        except ProtocolError:
            pass
    return out


def test_every_fault_kind_is_observable(tmp_path: Path, db_path: Path, embedded_broker: BackgroundBroker,
                                        hub: HubSubscriber) -> None:
    n = len(KINDS) + 1
    ledger = tmp_path / "ledger.db"
    settings = settings_for(embedded_broker.port, n, profile="env", ledger=ledger)
    sim = BackgroundFleet(settings, provision_fleet(db_path, n), fault_plan=PLAN).start()
    try:
        assert wait_for(lambda: len(telemetry_seqs(hub, CLEAN)) >= 15, timeout=15)
        assert wait_for(lambda: len(hub.of(MessageClass.STATUS, DEV[FaultKind.DISCONNECT_STORM])) >= 4, timeout=10)
        silent_connected = sim.call(lambda: sim.fleet.device(DEV[FaultKind.SILENT]).client is not None  # type: ignore[union-attr]
                                    and sim.fleet.device(DEV[FaultKind.SILENT]).client.is_connected)  # type: ignore[union-attr]
    finally:
        summary = sim.stop()
    stop_at = time.monotonic()

    # clean device: seq 1.. without gaps or repeats
    clean = telemetry_seqs(hub, CLEAN)
    assert clean == list(range(1, len(clean) + 1))

    # packet loss: gaps in seq
    lossy = telemetry_seqs(hub, DEV[FaultKind.PACKET_LOSS])
    missing = set(range(1, max(lossy) + 1)) - set(lossy)
    assert missing and all(s % settings.fault_every == 0 for s in missing)

    # duplicate: some seq arrives twice
    dups = telemetry_seqs(hub, DEV[FaultKind.DUPLICATE])
    assert len(dups) > len(set(dups))

    # clock skew: timestamps hours ahead once active
    skewed = [decode_telemetry(s.payload).ts for s in hub.of(MessageClass.TELEMETRY, DEV[FaultKind.CLOCK_SKEW])]
    assert max(skewed) / 1000 - time.time() > 2.5 * 3600

    # malformed: undecodable payloads on the telemetry topic
    bad = [s for s in hub.of(MessageClass.TELEMETRY, DEV[FaultKind.MALFORMED])]
    undecodable = 0
    for s in bad:
        try:
            decode_telemetry(s.payload)
        except ProtocolError as exc:
            undecodable += exc.reason.value == "undecodable"
    assert undecodable >= 1

    # oversized: each oversized seq is either seen above the limit or dropped by the broker (a gap)
    dev = DEV[FaultKind.OVERSIZED]
    with sqlite3.connect(ledger) as db:
        over = [r[0] for r in db.execute("SELECT seq FROM messages WHERE device = ? AND kind = 'oversized'", [dev])]
        fault_rows = db.execute("SELECT kind, COUNT(*) FROM faults GROUP BY kind").fetchall()
    assert over
    big = [s for s in hub.of(MessageClass.TELEMETRY, dev) if len(s.payload) > LIMITS.max_payload_bytes]
    seen = set(telemetry_seqs(hub, dev))
    assert all(q not in seen for q in over) or len(big) >= 1
    assert len(big) + sum(q not in seen for q in over) >= len(over)

    # silent: the socket stays open, and nothing at all arrives after the fault
    assert silent_connected
    silent = hub.of(MessageClass.TELEMETRY, DEV[FaultKind.SILENT])
    assert silent, "the silent device sent nothing before its fault"
    last = max(s.at for s in silent)
    assert stop_at - last > 2.0
    assert [decode_status(s.payload).state for s in hub.of(MessageClass.STATUS, DEV[FaultKind.SILENT])] == [StatusState.ONLINE]

    # bad credentials: refused, never online
    assert not hub.of(MessageClass.STATUS, DEV[FaultKind.BAD_CREDENTIALS])
    assert summary.refused >= 1 and summary.faults[FaultKind.BAD_CREDENTIALS.value] >= 1

    # disconnect storm: reconnects, births re-sent, and the will (offline) fires in between
    states = [decode_status(s.payload).state for s in hub.of(MessageClass.STATUS, DEV[FaultKind.DISCONNECT_STORM])]
    assert states.count(StatusState.ONLINE) >= 2 and StatusState.OFFLINE in states[:-1]
    assert summary.reconnects >= 1

    # every fault is in the ledger with device and seq
    assert {k for k, _ in fault_rows} >= {k.value for k in KINDS}


def test_fault_spec_parsing_and_seeded_choice() -> None:
    assert parse_fault("silent=0.05") == (FaultKind.SILENT, 0.05)
    assert parse_fault("packet-loss=10%") == (FaultKind.PACKET_LOSS, 0.1)
    for bad in ("silence=0.1", "silent", "silent=2", "silent=x"):
        with pytest.raises(Exception, match="fault"):
            parse_fault(bad)
    plan = assign_faults({FaultKind.SILENT: 0.05, FaultKind.DUPLICATE: 0.1}, 1000, seed=7)
    assert sum(FaultKind.SILENT in v for v in plan.values()) == 50
    assert sum(FaultKind.DUPLICATE in v for v in plan.values()) == 100
    assert plan == assign_faults({FaultKind.SILENT: 0.05, FaultKind.DUPLICATE: 0.1}, 1000, seed=7)
    assert plan != assign_faults({FaultKind.SILENT: 0.05, FaultKind.DUPLICATE: 0.1}, 1000, seed=8)
    assert len(assign_faults({FaultKind.SILENT: 0.001}, 10, seed=1)) == 1
