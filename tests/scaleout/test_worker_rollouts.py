"""A worker group drives a staged rollout: exactly one worker owns it, and a peer takes over when it is SIGKILLed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from scaleout_helpers import WorkerProcess
from support import MosquittoProcess, wait_for
from test_worker_group import _workers_up

from device_sim.background import BackgroundFleet
from device_sim.fleet import device_id, provision
from device_sim.ota import OtaPlan
from device_sim.settings import Behaviour, SimSettings
from hub.firmware import add_image, rollout_status, start_rollout
from hub.rollout_owner import claim_name
from hub.storage import FirmwareStore, PresenceStore, StatusStore, open_database

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

OLD, NEW = "sim-1.0.0", "sim-2.0.0"
SIZE = 40_000


def _drivers(db: Path) -> tuple[list[str], str | None]:
    """The workers whose heartbeat says they drive the rollouts, and the holder of the group's claim."""
    conn = open_database(db)
    try:
        rows = StatusStore(conn)
        live = [b.worker for b in rows.heartbeats() if b.connected and b.stats.get("drives_rollouts")]
        return live, rows.adopter_of(claim_name("fw"))
    finally:
        conn.close()


def _devices(db: Path, rid: int) -> dict[str, object]:
    conn = open_database(db)
    try:
        return {d.device_id: d for d in FirmwareStore(conn).rollout_devices(rid)}
    finally:
        conn.close()


def _online(db: Path, ids: list[str]) -> bool:
    conn = open_database(db)
    try:
        p = {d.device_id: d for d in PresenceStore(conn).load_devices()}
    finally:
        conn.close()
    return all(i in p and p[i].state == "online" for i in ids)


def test_one_worker_drives_the_rollout_and_a_peer_takes_over_after_sigkill(
        mosquitto: MosquittoProcess, db_path: Path, tmp_path: Path) -> None:
    n = 6
    ids = [device_id("ota", i) for i in range(1, n + 1)]
    image = tmp_path / "fw.bin"
    image.write_bytes(os.urandom(SIZE))
    add_image(db_path, image, NEW)
    workers = {name: WorkerProcess(db_path, mosquitto.port, "fw", name, tmp_path / f"{name}.log",
                                   "--adopt-after", "3s").start() for name in ("hub-fw-1", "hub-fw-2")}
    fleet: BackgroundFleet | None = None
    try:
        assert wait_for(lambda: _workers_up(db_path) == 2, 20), [w.log.read_text() for w in workers.values()]
        # exactly one of the two drives the rollouts, and it is the one holding the claim
        assert wait_for(lambda: len(_drivers(db_path)[0]) == 1, 20), _drivers(db_path)
        (owner,), holder = _drivers(db_path)
        assert holder == owner
        survivor = next(w for w in workers if w != owner)

        creds = provision(db_path, ids)
        settings = SimSettings(devices=n, prefix="ota", port=mosquitto.port, rate=1.0, reconnect_delay=0.2, fw=OLD,
                               behaviour={p: Behaviour(encoding="cbor") for p in ("env", "power", "gps")})
        fleet = BackgroundFleet(settings, creds, ota=OtaPlan(stall_s=3.0)).start()
        assert wait_for(lambda: _online(db_path, ids), 30), "the fleet did not come online"
        # 6 x 40 kB at 24 kB/s: about 10 s, so the owner dies with downloads under way
        rid = start_rollout(db_path, NEW, "sim", (0.5, 1.0), max_failure_rate=0.0, max_concurrent=6,
                            bandwidth=24_000)
        assert wait_for(lambda: any(0 < d.progress < SIZE for d in _devices(db_path, rid).values()), 30), \
            workers[owner].log.read_text()[-3000:]
        workers[owner].kill()

        assert wait_for(lambda: _drivers(db_path)[1] == survivor, 20), (_drivers(db_path),
                                                                        workers[survivor].log.read_text()[-3000:])
        assert wait_for(lambda: rollout_status(db_path, rid)[0].state == "completed", 90), \
            (rollout_status(db_path, rid), workers[survivor].log.read_text()[-3000:])
        assert {d.state for d in _devices(db_path, rid).values()} == {"succeeded"}  # type: ignore[attr-defined]
        assert f"driving the rollouts of group=fw worker={survivor}" in workers[survivor].log.read_text()
        # one driver at a time: a second one would have answered every request again. Each device received
        # the image once, plus at most the chunks re-asked after the takeover, plus the protocol's few percent
        counters = [fleet.call(lambda d=d: fleet.fleet.device(d).ota.counters) for d in ids]  # type: ignore[union-attr]
        for dev, c in zip(ids, counters, strict=True):
            assert c.wire_bytes <= 1.1 * SIZE + 2 * 4000, (dev, c)
            assert c.chunks == SIZE // 4000, (dev, c)
    finally:
        if fleet is not None:
            fleet.stop()
        for w in workers.values():
            w.stop()
