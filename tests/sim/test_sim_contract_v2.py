"""Simulated devices on contract v2 against a real hub: time without a clock, and the rebirth request.

firmware_protocol.md 4.4: a device without an RTC stamps uptime, learns the hub's time from a
live watermark and publishes ``boot_ts``; the hub stores wall-clock times. Section 6: ``rebirth``
makes a device publish a new birth and re-send its buffer.
"""

from __future__ import annotations

import time
from pathlib import Path

from sim_helpers import provision_fleet, settings_for
from support import wait_for

from device_sim.background import BackgroundFleet
from hub.storage import CommandStore, open_database
from hub.storage.queries import presence, readings
from protocol.models import CommandState


def _rows(db: Path, device: str) -> list[dict]:  # type: ignore[type-arg]
    conn = open_database(db)
    try:
        return readings(conn, device)
    finally:
        conn.close()


def _presence(db: Path) -> dict:  # type: ignore[type-arg]
    conn = open_database(db)
    try:
        return presence(conn)
    finally:
        conn.close()


def test_devices_without_a_clock_get_wall_clock_readings(embedded_broker, db_path, start_hub) -> None:  # type: ignore[no-untyped-def]
    start_hub(embedded_broker.port)
    sim = BackgroundFleet(settings_for(embedded_broker.port, 2, rtc=False, profile="env"),
                          provision_fleet(db_path, 2)).start()
    try:
        assert wait_for(lambda: all((_presence(db_path).get(d) or {}).get("boot_ts") for d in ("sim-00001", "sim-00002")),
                        15), _presence(db_path)
        started = time.time()
        assert wait_for(lambda: any(r["received_at"] > started + 0.5 for r in _rows(db_path, "sim-00001")), 15)
    finally:
        sim.stop()
    rows = _rows(db_path, "sim-00001")
    assert rows and all(abs(r["ts"] - r["received_at"]) < 60 for r in rows), rows[:3]  # uptime stamps were corrected
    assert not any(r["skewed"] for r in rows if r["received_at"] > started)


def test_a_rebirth_request_brings_a_new_birth_and_a_re_send(embedded_broker, db_path, start_hub) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(embedded_broker.port)
    sim = BackgroundFleet(settings_for(embedded_broker.port, 1, profile="env"), provision_fleet(db_path, 1)).start()
    try:
        assert wait_for(lambda: (_presence(db_path).get("sim-00001") or {}).get("state") == "online", 15)
        births = sim.summary().births
        assert hub.commands is not None
        rec = hub.commands.submit("sim-00001", "rebirth")
        store = CommandStore(db_path, readonly=True)
        assert wait_for(lambda: (store.get(rec.id) or rec).state is CommandState.SUCCEEDED, 15)
        assert wait_for(lambda: sim.summary().rebirths == 1 and sim.summary().births > births, 5), sim.summary()
    finally:
        sim.stop()
