"""Commands with two hub workers: each command is owned by one worker and reaches its device exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from command_device import CommandDevice
from support import add_device, wait_for

from hub.storage import CommandStore
from hub.config import HubSettings
from hub.ops_client import OpsClient
from hub.service import Hub

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def workers(mosquitto, db_path) -> Iterator[list[Hub]]:  # type: ignore[no-untyped-def]
    hubs = [Hub(HubSettings(db=db_path, broker=f"mqtt://127.0.0.1:{mosquitto.port}", worker_group="cmd",
                            client_id=f"hub-cmd-{n}", presence_check_s=0.2)).start() for n in (1, 2)]
    yield hubs
    for h in hubs:
        h.stop()


def test_commands_exactly_once_with_two_workers(mosquitto, registry, db_path, workers) -> None:  # type: ignore[no-untyped-def]
    devices = [CommandDevice(mosquitto.port, add_device(registry, f"cmd-dev-{i}")).connect() for i in range(3)]
    store = CommandStore(str(db_path))
    try:
        # both workers must see the births (in the db) before commands are sent
        assert wait_for(lambda: store.conn.execute("SELECT COUNT(*) FROM devices WHERE state='online'").fetchone()[0] == 3, 10)
        ids: list[str] = []
        with OpsClient(f"mqtt://127.0.0.1:{mosquitto.port}", "ops-1", "any") as ops:
            for _ in range(8):
                resp = ops.send([d.id for d in devices], "ping")
                assert resp.ok and not resp.refused
                ids += [c.id for c in resp.commands]
        assert len(ids) == 24

        def settled() -> bool:
            return all(rec is not None and rec.final for rec in (store.get(i) for i in ids))

        assert wait_for(settled, 15)
        recs = [store.get(i) for i in ids]
        assert all(r is not None and r.state.value == "succeeded" for r in recs)
        owners = Counter(r.owner for r in recs if r is not None)
        assert set(owners) == {"hub-cmd-1", "hub-cmd-2"}, owners  # requests were shared, each has one owner
        # every id reached its device once and ran once
        for dev in devices:
            mine = {r.id for r in recs if r is not None and r.device_id == dev.id}
            assert sorted(dev.received) == sorted(mine) and sorted(dev.executed) == sorted(mine)
        for hub in workers:
            bridge = hub.commands.bridge  # type: ignore[union-attr]
            assert wait_for(lambda b=bridge: not b.active, 3), bridge.active  # the owner saw the final state
            assert bridge.counters["resends"] == 0 and bridge.counters["forged_replies"] == 0
        # each command went queued -> sent -> (delivered) -> succeeded, each state once, whichever worker
        # applied the replies; "received" and "succeeded" may be handled by two workers in either order,
        # and a "received" that lands after the final state is ignored (the final state stands)
        for i in ids:
            assert [h["state"] for h in store.history(i)] in (["queued", "sent", "delivered", "succeeded"],
                                                               ["queued", "sent", "succeeded"])
    finally:
        for dev in devices:
            dev.disconnect()
