"""Harness of the reliability tests: a simulated fleet with a ledger, and the ledger-vs-hub audit.

The audit is the delivery guarantee written as code (firmware_protocol.md 5.6): every telemetry
message the simulator produced is, exactly once, stored with all its readings, or stored as a
dead letter (the ``dead-letter`` fault: a reading the hub refuses), or recorded as dropped by
the device (a buffer overflow or a message given up after three sends, unless a copy reached
the hub after all); a message that was never sent (packet loss) is not stored and sits inside
a gap. Each category is counted, and anything unaccounted for fails the audit.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import HubProcess, db_rows, load_factor

from device_sim.background import BackgroundFleet
from hub.storage import open_database
from device_sim.fleet import Credentials, SimSummary, device_id, provision
from device_sim.settings import SimSettings


def provision_fleet(db: Path, n: int, prefix: str = "rel") -> Credentials:
    """Register ``n`` devices ``<prefix>-00001``... in the registry of ``db``."""
    return provision(db, [device_id(prefix, i) for i in range(1, n + 1)])


def sim_settings(port: int, n: int, ledger: Path, **kw: Any) -> SimSettings:
    """Fast, brisk settings: 10 messages/s per device, quick reconnects and re-sends."""
    base: dict[str, Any] = dict(devices=n, port=port, prefix="rel", profile="env", rate=10.0, ledger=ledger,
                                reconnect_delay=0.2, fault_start_s=0.5,
                                fault_every=5, storm_period_s=1.0, keepalive=30)
    base.update(kw)
    return SimSettings(**base)


@dataclass
class Audit:
    """The ledger compared with the hub's database."""

    produced: int = 0
    """Telemetry messages the devices produced and kept (the guarantee covers those produced before the cutoff)."""
    covered: int = 0
    stored: int = 0
    """Of the covered ones, stored exactly once with every reading."""
    missing: list[tuple[str, int, int]] = field(default_factory=list)
    duplicated: list[tuple[str, int, int]] = field(default_factory=list)
    readings_mismatch: list[tuple[str, int, int]] = field(default_factory=list)
    phantom: list[tuple[str, int, int]] = field(default_factory=list)
    """Stored by the hub but never produced as telemetry by the simulator."""
    lost: int = 0
    """Messages the simulator never sent (packet loss): outside the guarantee."""
    lost_trailing: int = 0
    """Lost messages after which nothing was stored yet (a gap shows once a later seq arrives)."""
    lost_stored: list[tuple[str, int, int]] = field(default_factory=list)
    lost_not_in_gap: list[tuple[str, int, int]] = field(default_factory=list)
    overflowed: int = 0
    """Dropped from a full buffer or given up after three re-sends (the device declared them dropped).
    Those sent before the device dropped them still reach the hub through the broker (``overflow_stored``);
    only ``overflow_dropped`` ones are data the hub never got."""
    overflow_stored: int = 0
    """... of which a copy reached the hub before or after all (stored exactly once)."""
    overflow_dropped: int = 0
    """... of which the hub records them as dropped by device."""
    overflow_unaccounted: list[tuple[str, int, int]] = field(default_factory=list)
    deadlettered: int = 0
    """Produced with a reading the hub refuses (the dead-letter fault)."""
    deadletter_stored: int = 0
    """... stored as a dead letter under their seq, exactly once."""
    deadletter_wrong: list[tuple[str, int, int]] = field(default_factory=list)
    """... not a single dead letter with that seq, or stored as readings."""
    readings_covered: int = 0
    readings_stored: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.readings_mismatch or self.phantom or self.lost_stored
                    or self.lost_not_in_gap or self.overflow_unaccounted or self.deadletter_wrong)

    def line(self) -> str:
        return (f"produced={self.produced} covered={self.covered} stored={self.stored} missing={len(self.missing)} "
                f"duplicated={len(self.duplicated)} readings={self.readings_stored}/{self.readings_covered} "
                f"readings_mismatch={len(self.readings_mismatch)} phantom={len(self.phantom)} lost={self.lost} "
                f"lost_stored={len(self.lost_stored)} lost_not_in_gap={len(self.lost_not_in_gap)} "
                f"overflowed={self.overflowed} (stored={self.overflow_stored} dropped={self.overflow_dropped} "
                f"unaccounted={len(self.overflow_unaccounted)}) deadlettered={self.deadlettered} "
                f"(stored={self.deadletter_stored} wrong={len(self.deadletter_wrong)}) first_missing={self.missing[:5]}")


def audit(ledger: Path, hub_db: Path, cutoff: float | None = None) -> Audit:
    """Compare the simulator's ledger with the hub's database.

    The guarantee covers every telemetry message produced before ``cutoff`` (wall clock; None:
    all of them) that the device did not drop from a full buffer. Messages produced later may
    still be on their way and are checked only for duplicates.
    """
    led = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    hub = open_database(hub_db, readonly=True)  # a SQLite file or a PostgreSQL database
    try:
        overflow = set(led.execute("SELECT device, boot, seq FROM faults WHERE kind IN ('buffer-overflow', 'abandoned')"))
        rows = led.execute("SELECT device, boot, seq, kind, n_readings, produced_at FROM messages").fetchall()
        stored: dict[tuple[str, int, int], int] = {}
        for dev, boot, seq, n in hub.execute("SELECT device_id, boot, seq, COUNT(*) FROM messages"
                                             " GROUP BY device_id, boot, seq"):
            stored[(dev, boot, seq)] = n
        readings: dict[tuple[str, int, int], int] = {}
        for dev, boot, seq, n in hub.execute("SELECT device_id, boot, seq, COUNT(*) FROM readings"
                                             " GROUP BY device_id, boot, seq"):
            readings[(dev, boot, seq)] = n
        gaps = hub.execute("SELECT device_id, boot, from_seq, to_seq FROM gaps WHERE missing > 0").fetchall()
        dropped_gaps = hub.execute("SELECT device_id, boot, from_seq, to_seq FROM gaps"
                                   " WHERE missing > 0 AND dropped_at IS NOT NULL").fetchall()
        dead: dict[tuple[str, int, int], int] = {}
        for dev, boot, seq, n in hub.execute("SELECT device_id, boot, seq, COUNT(*) FROM deadletters"
                                             " WHERE seq IS NOT NULL GROUP BY device_id, boot, seq"):
            dead[(dev, boot, seq)] = n
    finally:
        led.close()
        hub.close()
    a = Audit()
    telemetry: set[tuple[str, int, int]] = set()
    for dev, boot, seq, kind, n, produced_at in rows:
        key = (dev, boot, seq)
        if kind == "lost":
            a.lost += 1
            if key in stored:
                a.lost_stored.append(key)
            if not any(k[0] == dev and k[1] == boot and k[2] > seq for k in stored):
                a.lost_trailing += 1  # nothing after it arrived yet: no gap can be seen
            elif not any(g[0] == dev and g[1] == boot and g[2] <= seq <= g[3] for g in gaps):
                a.lost_not_in_gap.append(key)
            continue
        if kind == "deadletter":
            telemetry.add(key)  # never stored as readings: a phantom check would flag nothing anyway
            a.deadlettered += 1
            if cutoff is not None and produced_at > cutoff:
                continue
            if dead.get(key) == 1 and key not in stored:
                a.deadletter_stored += 1
            elif key not in overflow:  # an overflow victim the hub never saw is accounted below
                a.deadletter_wrong.append(key)
            continue
        if kind != "telemetry":
            continue
        telemetry.add(key)
        a.produced += 1
        if stored.get(key, 0) > 1 or readings.get(key, 0) > n:
            a.duplicated.append(key)
        if key in overflow:
            a.overflowed += 1
            if key in stored:
                a.overflow_stored += 1
            elif any(g[0] == dev and g[1] == boot and g[2] <= seq <= g[3] for g in dropped_gaps):
                a.overflow_dropped += 1
            elif cutoff is None or produced_at <= cutoff:
                a.overflow_unaccounted.append(key)
            continue
        if cutoff is not None and produced_at > cutoff:
            continue
        a.covered += 1
        a.readings_covered += n
        if key not in stored:
            a.missing.append(key)
            continue
        a.readings_stored += readings.get(key, 0)
        if readings.get(key, 0) != n:
            a.readings_mismatch.append(key)
        elif stored[key] == 1:
            a.stored += 1
    a.phantom = sorted(k for k in stored if k not in telemetry and k[0].startswith("rel-"))
    a.missing.sort()
    return a


def ledger_past(ledger: Path, cutoff: float) -> bool:
    """True once the ledger holds a message produced after ``cutoff``: everything before it is flushed too."""
    try:
        conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
        try:
            latest = conn.execute("SELECT MAX(produced_at) FROM messages").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return latest is not None and latest > cutoff


def settle(ledger: Path, hub_db: Path, cutoff: float, stall_s: float = 20.0, cap_s: float = 300.0) -> Audit:
    """Poll the audit until nothing produced before ``cutoff`` is missing.

    The simulator writes its ledger in batches (every half second): the audit waits for a row
    produced after the cutoff first, so that it never judges a ledger that lacks the last messages.
    It gives up when the hub stops storing for ``stall_s`` x :func:`load_factor` (a loaded machine
    is slow, not stuck) or after ``cap_s``.
    """
    start = time.monotonic()
    while not ledger_past(ledger, cutoff) and time.monotonic() - start < stall_s * load_factor():
        time.sleep(0.1)
    last_change, last_stored = time.monotonic(), -1
    while True:
        result = audit(ledger, hub_db, cutoff)
        now = time.monotonic()
        if result.covered and not result.missing:
            return result
        if result.stored > last_stored:
            last_change, last_stored = now, result.stored
        elif now - last_change > stall_s * load_factor() or now - start > cap_s:
            return result
        time.sleep(0.25)


def stored_count(hub_db: Path) -> int:
    """Messages in the hub's database (0 before the table exists)."""
    rows = db_rows(hub_db, "SELECT COUNT(*) FROM messages")
    return int(rows[0][0]) if rows else 0


class HubSubprocess(HubProcess):
    """``fleet hub`` as a real subprocess whose output is read through a pipe (and kept in ``lines``).

    A pipe, not a file: the disk-full test caps the process's file size (RLIMIT_FSIZE), which
    must not silence the log that reports the failure.
    """

    def __init__(self, db: Path, port: int, *extra: str) -> None:
        super().__init__(db, port, Path(os.devnull), *extra)
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> HubSubprocess:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "FLEET_LOG_FORMAT": "text"})
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def log(self, last: int = 40) -> str:  # type: ignore[override]
        return "\n".join(self.lines[-last:])

    def wait_started(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any("hub started" in line for line in self.lines):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"hub did not start:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        super().stop()
        if self._reader is not None:
            self._reader.join(5)


def finish(sim: BackgroundFleet, ledger: Path, hub_db: Path, cutoff: float) -> tuple[Audit, SimSummary]:
    """Wait until everything produced before ``cutoff`` is stored, stop the fleet, and audit the full ledger."""
    try:
        settle(ledger, hub_db, cutoff)
    finally:
        summary = sim.stop()
    return audit(ledger, hub_db, cutoff), summary
