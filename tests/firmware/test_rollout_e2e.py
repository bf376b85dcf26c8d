"""A staged rollout over the simulator, end to end: real embedded broker, real hub, real devices.

The faults of issue 16: a corrupt chunk (fetched again), a power loss mid-download (resumes where it
stopped), a bad image (rolled back, reported), a device offline for the whole first stage (updated
when it comes back), and a rollout whose failure rate passes its threshold (pauses itself).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet
from device_sim.fleet import device_id, provision
from device_sim.ota import OtaFault, OtaPlan
from device_sim.settings import Behaviour, SimSettings
from protocol.firmware import max_chunk
from hub.config import HubSettings
from hub.firmware import abort_rollout, add_image, rollout_status, stage_plan, start_rollout
from hub.rollout import RolloutSettings
from hub.service import Hub
from hub.storage import FirmwareStore, PresenceStore, open_database

pytestmark = pytest.mark.slow

NEW = "sim-2.0.0"
OLD = "sim-1.0.0"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(os.urandom(40_000))  # 10 chunks of 4000 bytes for a CBOR device, 14 for a JSON one
    return path


def _start_hub(db_path: Path, port: int) -> Hub:
    settings = HubSettings(db=db_path, broker=f"mqtt://127.0.0.1:{port}", presence_check_s=0.5, staleness_min_s=60.0)
    return Hub(settings, rollout_settings=RolloutSettings(tick_s=0.1, device_timeout_s=60)).start(timeout=15)


@pytest.fixture
def hub(db_path: Path, embedded_broker: BackgroundBroker) -> Iterator[Hub]:
    h = _start_hub(db_path, embedded_broker.port)
    yield h
    h.stop()


def _fleet(db_path: Path, port: int, n: int, faults: dict[str, frozenset[OtaFault]]) -> BackgroundFleet:
    ids = [device_id("ota", i) for i in range(1, n + 1)]
    creds = provision(db_path, ids)
    # env and power devices read CBOR, gps devices JSON: both forms of the chunk travel
    cbor = {p: Behaviour(encoding="cbor") for p in ("env", "power")}
    settings = SimSettings(devices=n, prefix="ota", port=port, rate=2.0, reconnect_delay=0.2, fw=OLD, behaviour=cbor)
    return BackgroundFleet(settings, creds, ota=OtaPlan(stall_s=5.0, faults=faults)).start()


def _presence(db_path: Path) -> dict[str, Any]:
    conn = open_database(db_path)
    try:
        return {d.device_id: d for d in PresenceStore(conn).load_devices()}
    finally:
        conn.close()


def _devices(db_path: Path, rollout_id: int) -> dict[str, Any]:
    conn = open_database(db_path)
    try:
        return {d.device_id: d for d in FirmwareStore(conn).rollout_devices(rollout_id)}
    finally:
        conn.close()


def _online(db_path: Path, ids: list[str]) -> bool:
    p = _presence(db_path)
    return all(i in p and p[i].state == "online" for i in ids)


def test_staged_rollout_with_faults_updates_every_device(db_path: Path, embedded_broker: BackgroundBroker,
                                                         hub: Hub, image: Path) -> None:
    n = 10
    ids = [device_id("ota", i) for i in range(1, n + 1)]
    stages = (0.2, 0.6, 1.0)
    plan = stage_plan(ids, stages, NEW)
    first = sorted(d for d in ids if plan[d] == 0)
    second = sorted(d for d in ids if plan[d] == 1)
    last = sorted(d for d in ids if plan[d] == 2)
    offline, corrupt = first
    power, bad = second[0], last[0]
    faults = {offline: frozenset({OtaFault.OFFLINE}), corrupt: frozenset({OtaFault.CORRUPT_CHUNK}),
              power: frozenset({OtaFault.POWER_LOSS}), bad: frozenset({OtaFault.BAD_IMAGE})}
    row = add_image(db_path, image, NEW)
    fleet = _fleet(db_path, embedded_broker.port, n, faults)
    try:
        others = [d for d in ids if d != offline]
        assert wait_for(lambda: _online(db_path, others), 30), "the fleet did not come online"
        rid = start_rollout(db_path, NEW, "sim", stages, max_failure_rate=0.2, max_concurrent=3, bandwidth=1e6)

        # the first stage completes without the offline device; it is still waiting for it
        assert wait_for(lambda: rollout_status(db_path, rid)[0].stage >= 1, 60), rollout_status(db_path, rid)
        rows = _devices(db_path, rid)
        assert rows[offline].state == "pending"
        assert rows[corrupt].state == "succeeded"
        fleet.call(lambda: fleet.fleet.device(offline).ota.release())  # type: ignore[union-attr]

        assert wait_for(lambda: rollout_status(db_path, rid)[0].state == "completed", 120), rollout_status(db_path, rid)
        status = rollout_status(db_path, rid)[0]
        assert status.counts == {"succeeded": n - 1, "rolled_back": 1}
        rows = _devices(db_path, rid)
        presence = _presence(db_path)
        for dev in ids:
            assert presence[dev].fw == (OLD if dev == bad else NEW), dev
        # the bad image came back on the old version: reported as rolled back, with the device's reason
        assert rows[bad].state == "rolled_back"
        assert status.failures[0]["device"] == bad

        counters = {d: fleet.call(lambda d=d: fleet.fleet.device(d).ota.counters) for d in ids}  # type: ignore[union-attr]
        # the corrupt chunk was fetched again, once
        assert counters[corrupt].refetched == 1
        encoding = {d: fleet.call(lambda d=d: fleet.fleet.device(d).encoding) for d in ids}  # type: ignore[union-attr]
        assert set(encoding.values()) == {"json", "cbor"}
        assert rows[corrupt].bytes_served == row.size + max_chunk(encoding[corrupt])
        # the power-loss device resumed from the chunk it had confirmed, not from 0
        assert len(counters[power].resumed_at) == 1 and counters[power].resumed_at[0] >= 0.4 * row.size
        assert rows[power].bytes_served == row.size
        assert rows[offline].state == "succeeded"
        # on the wire (offer, requests, chunks, reports, PUBACKs): the image plus a few percent in CBOR;
        # base64 costs a JSON device a third more
        for dev in ids:
            if dev != corrupt:
                limit = 1.1 if encoding[dev] == "cbor" else 1.4
                assert counters[dev].wire_bytes <= limit * row.size, (dev, encoding[dev], counters[dev])
    finally:
        fleet.stop()


def test_a_rollout_whose_failure_rate_passes_the_threshold_pauses_itself(
        db_path: Path, embedded_broker: BackgroundBroker, hub: Hub, image: Path) -> None:
    n = 6
    ids = [device_id("ota", i) for i in range(1, n + 1)]
    stages = (0.5, 1.0)
    plan = stage_plan(ids, stages, NEW)
    first = sorted(d for d in ids if plan[d] == 0)
    later = sorted(d for d in ids if plan[d] == 1)
    add_image(db_path, image, NEW)
    fleet = _fleet(db_path, embedded_broker.port, n, {first[0]: frozenset({OtaFault.BAD_IMAGE})})
    try:
        assert wait_for(lambda: _online(db_path, ids), 30), "the fleet did not come online"
        rid = start_rollout(db_path, NEW, "sim", stages, max_failure_rate=0.05, max_concurrent=6, bandwidth=1e6)
        assert wait_for(lambda: rollout_status(db_path, rid)[0].state == "paused", 60), rollout_status(db_path, rid)
        status = rollout_status(db_path, rid)[0]
        assert "failure rate" in status.reason and "passed 5%" in status.reason
        assert status.stage == 0
        # the next stage was never offered the image: mark the moment with the other first-stage devices done
        assert wait_for(lambda: all(_devices(db_path, rid)[d].state in ("succeeded", "rolled_back") for d in first), 60)
        rows = _devices(db_path, rid)
        assert rows[first[0]].state == "rolled_back"
        assert all(rows[d].state == "pending" for d in later)
        assert _presence(db_path)[first[0]].fw == OLD

        abort_rollout(db_path, rid)
        assert wait_for(lambda: rollout_status(db_path, rid, all_=True)[0].state == "aborted", 10)
    finally:
        fleet.stop()


def test_a_rollout_survives_a_hub_restart(db_path: Path, embedded_broker: BackgroundBroker, image: Path) -> None:
    n = 4
    ids = [device_id("ota", i) for i in range(1, n + 1)]
    row = add_image(db_path, image, NEW)
    hub = _start_hub(db_path, embedded_broker.port)
    fleet = _fleet(db_path, embedded_broker.port, n, {})
    try:
        assert wait_for(lambda: _online(db_path, ids), 30), "the fleet did not come online"
        # 20 kB/s for 4 x 40 kB: the hub stops while downloads are under way
        rid = start_rollout(db_path, NEW, "sim", (0.5, 1.0), max_failure_rate=0.0, max_concurrent=4, bandwidth=20_000)
        assert wait_for(lambda: any(0 < d.progress < row.size for d in _devices(db_path, rid).values()), 30)
        hub.stop()
        before = {d: r.progress for d, r in _devices(db_path, rid).items()}
        hub = _start_hub(db_path, embedded_broker.port)
        assert wait_for(lambda: rollout_status(db_path, rid)[0].state == "completed", 90), rollout_status(db_path, rid)
        rows = _devices(db_path, rid)
        assert {r.state for r in rows.values()} == {"succeeded"}
        assert any(0 < p < row.size for p in before.values())
        # nobody started again from 0: each image crossed the link once, plus at most the chunk lost in the restart
        for r in rows.values():
            assert row.size <= r.bytes_served <= row.size + 4000, r
    finally:
        fleet.stop()
        hub.stop()
