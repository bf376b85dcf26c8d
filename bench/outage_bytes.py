"""Uplink bytes per stored reading: a clean run vs. a run with a hub outage, dead letters and a buffer overflow.

Issue 11, item 6: a device must re-send only when it helps. Both runs use the same simulated
fleet, rate and length against the embedded broker and an in-process hub; the faulty run stops
the hub for ``--outage`` seconds in the middle (the broker holds what the devices send), makes
1 in ``--dead-every`` messages carry a reading the hub refuses (dead-lettered under its seq),
and gives the devices a buffer smaller than the outage's backlog (so it overflows). The figure
is every MQTT byte the devices wrote (CONNECT, SUBSCRIBE, PUBLISH, re-sends, PINGREQ) divided
by the readings the hub stored. Goal: faulty / clean <= 1.1.

    python bench/outage_bytes.py                 # 20 devices, 1 msg/s, 60 s outage (about 5 minutes)
    python bench/outage_bytes.py --json

``run_pair`` is also what ``tests/reliability/test_outage_bytes.py`` runs, at a smaller scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.background import BackgroundBroker  # noqa: E402
from broker.config import BrokerSettings  # noqa: E402
from broker.server import free_port  # noqa: E402
from device_sim.background import BackgroundFleet  # noqa: E402
from device_sim.faults import FaultKind  # noqa: E402
from device_sim.fleet import device_id, provision  # noqa: E402
from device_sim.settings import Behaviour, SimSettings  # noqa: E402
from hub.config import HubSettings  # noqa: E402
from hub.service import Hub  # noqa: E402


@dataclass
class RunFigures:
    """What one run sent and stored."""

    bytes_out: int
    readings_stored: int
    messages: int
    publishes: int
    resent: int
    overflowed: int
    abandoned: int
    deadletters: int
    seqs_dropped: int

    @property
    def bytes_per_reading(self) -> float:
        return self.bytes_out / max(1, self.readings_stored)


@dataclass
class Scenario:
    devices: int = 20
    rate: float = 1.0
    """Messages per second per device."""
    before_s: float = 30.0
    outage_s: float = 60.0
    after_s: float = 40.0
    """Recovery: the hub drains the broker's backlog; the run ends after this."""
    dead_every: int = 100
    """One message in this many is dead-lettered (1%)."""
    buffer_size: int = 32
    """Smaller than outage_s x rate: the buffer overflows during the outage."""
    encoding: str = "cbor"


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0] or 0)
    finally:
        conn.close()


def run_once(workdir: Path, sc: Scenario, faulty: bool) -> RunFigures:
    """One run; ``faulty`` adds the hub outage, the dead letters and the small buffer."""
    db = workdir / ("faulty.db" if faulty else "clean.db")
    broker = BackgroundBroker(BrokerSettings(port=free_port(), db=db)).start()
    hub_settings = HubSettings(db=db, broker=f"mqtt://127.0.0.1:{broker.settings.port}", presence_check_s=0.5,
                               staleness_min_s=3600.0)
    hub: Hub | None = Hub(hub_settings).start(timeout=30)
    ids = [device_id("ob", i) for i in range(1, sc.devices + 1)]
    settings = SimSettings(
        devices=sc.devices, port=broker.settings.port, prefix="ob", profile="env", rate=sc.rate, seed=7,
        behaviour={"env": Behaviour(encoding=sc.encoding)}, reconnect_delay=0.5, keepalive=60,
        buffer_size=sc.buffer_size if faulty else 10_000, fault_start_s=0.0, fault_every=sc.dead_every,
        faults={FaultKind.DEAD_LETTER: 1.0} if faulty else {})
    sim = BackgroundFleet(settings, provision(db, ids)).start()
    try:
        time.sleep(sc.before_s)
        if faulty:
            assert hub is not None
            hub.stop()  # the broker keeps the hub's session and queues what the devices send
            hub = None
            time.sleep(sc.outage_s)
            hub = Hub(hub_settings).start(timeout=30)
        else:
            time.sleep(sc.outage_s)
        time.sleep(sc.after_s)
    finally:
        summary = sim.stop()
        if hub is not None:
            hub.stop()
        broker.stop()
    return RunFigures(
        bytes_out=summary.bytes_out, readings_stored=_count(db, "SELECT COUNT(*) FROM readings"),
        messages=summary.messages, publishes=summary.publishes, resent=summary.resent, overflowed=summary.dropped,
        abandoned=summary.abandoned, deadletters=_count(db, "SELECT COUNT(*) FROM deadletters"),
        seqs_dropped=_count(db, "SELECT COALESCE(SUM(missing), 0) FROM gaps WHERE dropped_at IS NOT NULL"))


def run_pair(sc: Scenario, workdir: Path | None = None) -> tuple[RunFigures, RunFigures]:
    """The clean run, then the faulty one."""
    with tempfile.TemporaryDirectory(prefix="outage-bytes-") as tmp:
        base = workdir or Path(tmp)
        return run_once(base, sc, faulty=False), run_once(base, sc, faulty=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=Scenario.devices)
    parser.add_argument("--rate", type=float, default=Scenario.rate)
    parser.add_argument("--outage", type=float, default=Scenario.outage_s)
    parser.add_argument("--before", type=float, default=Scenario.before_s)
    parser.add_argument("--after", type=float, default=Scenario.after_s)
    parser.add_argument("--dead-every", type=int, default=Scenario.dead_every)
    parser.add_argument("--buffer", type=int, default=Scenario.buffer_size)
    parser.add_argument("--encoding", choices=("json", "cbor"), default=Scenario.encoding)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    sc = Scenario(devices=a.devices, rate=a.rate, before_s=a.before, outage_s=a.outage, after_s=a.after,
                  dead_every=a.dead_every, buffer_size=a.buffer, encoding=a.encoding)
    clean, faulty = run_pair(sc)
    ratio = faulty.bytes_per_reading / clean.bytes_per_reading
    load = os.getloadavg()
    if a.json:
        print(json.dumps({"scenario": asdict(sc), "clean": asdict(clean), "faulty": asdict(faulty),
                          "clean_bytes_per_reading": clean.bytes_per_reading,
                          "faulty_bytes_per_reading": faulty.bytes_per_reading, "ratio": ratio,
                          "loadavg": load}, indent=2))
        return
    print(f"scenario: {sc.devices} devices x {sc.rate:g} msg/s, {sc.encoding}; faulty run: hub down {sc.outage_s:g} s, "
          f"1 in {sc.dead_every} dead-lettered, buffer {sc.buffer_size}")
    print(f"{'run':<8}{'bytes out':>12}{'readings':>10}{'B/reading':>11}{'messages':>10}{'publishes':>11}"
          f"{'resent':>8}{'overflow':>10}{'abandoned':>10}{'deadlet.':>9}{'dropped':>9}")
    for name, f in (("clean", clean), ("faulty", faulty)):
        print(f"{name:<8}{f.bytes_out:>12,}{f.readings_stored:>10,}{f.bytes_per_reading:>11.2f}{f.messages:>10,}"
              f"{f.publishes:>11,}{f.resent:>8,}{f.overflowed:>10,}{f.abandoned:>10,}{f.deadletters:>9,}"
              f"{f.seqs_dropped:>9,}")
    print(f"faulty / clean = {ratio:.3f} (goal <= 1.1); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
