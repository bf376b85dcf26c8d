"""Fault 5: the disk under the hub's database refuses writes, then recovers.

The hub runs as ``fleet hub`` and its file size limit (RLIMIT_FSIZE, set from outside with
``prlimit``) is dropped to one byte, so every write of SQLite fails as on a full disk, without
root or a special filesystem. Expected: the hub stops storing and acknowledging, says so at
error level (with back-off), shows it in its metrics, holds no more than its bounded queue,
and once the limit is lifted stores everything: the ledger finds nothing missing or doubled.
"""

from __future__ import annotations

import re
import resource
import time
import urllib.request
from pathlib import Path

import pytest
from reliability_harness import finish, provision_fleet, sim_settings, stored_count
from support import wait_for

from broker.background import BackgroundBroker
from broker.server import free_port
from device_sim.background import BackgroundFleet

DEVICES = 10
QUEUE = 200


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """SQLite only: the full disk is the hub's own file (on PostgreSQL it is the server's, see its docs)."""
    return tmp_path / "fleet.db"


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name}(?:_total)? ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


def test_disk_full_stops_acks_and_resumes_without_loss(tmp_path: Path, db_path: Path,
                                                       embedded_broker: BackgroundBroker,
                                                       hub_subprocess) -> None:  # type: ignore[no-untyped-def]
    port = embedded_broker.port
    mport = free_port()
    hub = hub_subprocess(port, "--metrics-port", str(mport), "--queue-size", str(QUEUE)).start()
    hub.wait_started()
    assert hub.proc is not None
    pid = hub.proc.pid
    ledger = tmp_path / "ledger.db"
    sim = BackgroundFleet(sim_settings(port, DEVICES, ledger), provision_fleet(db_path, DEVICES)).start()
    try:
        assert wait_for(lambda: stored_count(db_path) >= DEVICES * 15, 20), hub.log()
        soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))  # the disk is "full" from now on
        try:
            assert wait_for(lambda: metric(mport, "fleet_hub_store_failing") == 1, 10), hub.log()
            frozen = stored_count(db_path)
            # devices keep producing; the hub tries again and fails (an event, not a fixed wait): nothing
            # may be stored, acked or watermarked meanwhile
            assert wait_for(lambda: metric(mport, "fleet_hub_write_failures") >= 3, 30), hub.log()
            assert stored_count(db_path) == frozen
            assert metric(mport, "fleet_hub_queue_depth") <= QUEUE
            errors = [line for line in hub.lines if "ERROR" in line and "database write failed" in line]
            assert errors, hub.log()
            assert len(errors) <= 4, "the error is repeated with back-off, not every second"
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))  # space again
        assert wait_for(lambda: metric(mport, "fleet_hub_store_failing") == 0, 10), hub.log()
        assert any("database write works again" in line for line in hub.lines)
        assert wait_for(lambda: stored_count(db_path) >= frozen + DEVICES * 40, 20), hub.log()
        # enough traffic for the audit below to mean something, however fast the hub caught up
        assert wait_for(lambda: stored_count(db_path) > DEVICES * 60, 30), hub.log()
        assert hub.proc.poll() is None
    finally:
        result, summary = finish(sim, ledger, db_path, time.time())
    print(f"disk full: {result.line()} resent={summary.resent}")
    assert result.ok and result.covered > DEVICES * 60, result.line()
    assert result.overflow_dropped == 0, result.line()  # a buffer may overflow on a slow machine: nothing given up
