"""A worker dies and stays dead: its peer adopts its broker session, so its share moves and nothing is lost."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from command_device import CommandDevice
from scaleout_helpers import WorkerProcess
from support import add_device, wait_for
from test_worker_group import DEVICES, Producer, _workers_up, stored

from cli.main import cli
from hub.storage import CommandStore
from protocol.models import CommandState

pytestmark = pytest.mark.mosquitto


def test_dead_workers_share_moves_to_the_survivor_and_back(mosquitto, registry, db_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    workers = [WorkerProcess(db_path, mosquitto.port, "ingest", f"hub-ingest-{n}", tmp_path / f"w{n}.log",
                             "--adopt-after", "3s").start() for n in (1, 2)]
    producer: Producer | None = None
    try:
        assert wait_for(lambda: _workers_up(db_path) == 2, 15), [w.log.read_text() for w in workers]
        producer = Producer(mosquitto.port, registry, count=600, rate_hz=60)
        producer.thread.start()
        assert wait_for(lambda: len(stored(db_path)) > 200, 15)
        workers[0].kill()  # and it is not restarted
        producer.thread.join(40)
        expected = {(d, s) for d in DEVICES for s in range(1, 601)}
        assert producer.sent == expected
        # worker 2 adopts worker 1's session: what waited in it, and worker 1's share since, is stored
        assert wait_for(lambda: len(stored(db_path)) >= len(expected), 25), (len(stored(db_path)), len(expected),
                                                                            workers[1].log.read_text()[-3000:])
        assert "adopted worker=hub-ingest-1" in workers[1].log.read_text()
        rows = stored(db_path)
        assert len(rows) == len(set(rows)) and set(rows) == expected

        # worker 1 comes back: the broker hands its session back and the adopter steps aside
        workers[0].start()
        assert wait_for(lambda: "released worker=hub-ingest-1" in workers[1].log.read_text(), 20), \
            workers[1].log.read_text()[-3000:]
    finally:
        if producer is not None:
            producer.close()
        for w in workers:
            w.stop()


def test_dead_workers_commands_move_to_the_adopter(mosquitto, registry, db_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"mqtt://127.0.0.1:{mosquitto.port}"
    a = WorkerProcess(db_path, mosquitto.port, "ops", "hub-ops-1", tmp_path / "a.log", "--adopt-after", "3s").start()
    b: WorkerProcess | None = None
    try:
        assert wait_for(lambda: _workers_up(db_path) == 1, 15), a.log.read_text()
        creds = add_device(registry, "dev-late")  # offline: the command waits, owned by worker 1
        res = None
        for _ in range(30):  # one request id: however many tries, one command
            res = CliRunner().invoke(cli, ["--db", str(db_path), "send", "dev-late", "ping", "--no-wait", "--json",
                                           "--ttl", "2m", "--request-id", "r-adopt-1", "--broker", url])
            if res.exit_code == 7:  # device offline: queued
                break
        assert res is not None and res.exit_code == 7, res.output if res else ""
        cid = json.loads(res.stdout)[0]["id"]
        store = CommandStore(str(db_path))
        assert store.get(cid).owner == "hub-ops-1" and store.get(cid).state is CommandState.QUEUED
        b = WorkerProcess(db_path, mosquitto.port, "ops", "hub-ops-2", tmp_path / "b.log", "--adopt-after", "3s").start()
        assert wait_for(lambda: _workers_up(db_path) == 2, 15), b.log.read_text()
        a.kill()
        assert wait_for(lambda: store.get(cid).owner == "hub-ops-2", 20), b.log.read_text()[-3000:]
        device = CommandDevice(mosquitto.port, creds).connect()
        try:
            assert wait_for(lambda: store.get(cid).state is CommandState.SUCCEEDED, 20), b.log.read_text()[-3000:]
            assert device.executed == [cid]
        finally:
            device.disconnect()
    finally:
        a.stop()
        if b is not None:
            b.stop()
