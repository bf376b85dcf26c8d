"""A command queued for a device whose boot counter went back is delivered to the new board.

Before contract v2 the hub ignored the lower boot's birth: the device stayed offline for the
command bridge and its queued commands waited until they expired.
"""

from __future__ import annotations

from command_device import CommandDevice
from hub.storage import CommandStore, open_database
from hub.storage.queries import presence
from protocol.models import CommandState
from hub.config import HubSettings
from hub.service import Hub
from protocol.codec import encode
from protocol.models import Status
from protocol.topics import MessageClass, topic_for
from support import add_device, connect, wait_for


def test_queued_command_reaches_a_device_that_came_back_with_a_lower_boot(embedded_broker, registry, db_path):
    creds = add_device(registry, "reborn-1")
    hub = Hub(HubSettings(db=db_path, broker=f"mqtt://127.0.0.1:{embedded_broker.port}", presence_check_s=0.2)).start()
    try:
        # the old board: boot 7, then gone (its will)
        old = connect(embedded_broker.port, creds)
        for state in ("online", "offline"):
            old.publish(topic_for("reborn-1", MessageClass.STATUS), encode(Status(state=state, boot=7)),
                        qos=1, retain=True).wait_for_publish(5)
        old.disconnect()
        old.loop_stop()
        assert hub.commands is not None
        store = CommandStore(str(db_path))
        def state() -> str | None:
            conn = open_database(db_path)
            try:
                return presence(conn).get("reborn-1", {}).get("state")
            finally:
                conn.close()
        assert wait_for(lambda: state() == "offline", 30)
        # the bridge hears of the will after the commit: wait for its own view, or the command goes out at once
        bridge = hub.commands.bridge
        assert bridge is not None

        def bridge_offline() -> bool:
            return bool(bridge.call(lambda: (link := bridge.links.get("reborn-1")) is not None and not link.online))

        assert wait_for(bridge_offline, 30)
        rec = hub.commands.submit("reborn-1", "ping")
        assert rec.state is CommandState.QUEUED
        # the new board (same id, flash wiped): boot 1
        dev = CommandDevice(embedded_broker.port, creds).connect()
        try:
            assert wait_for(lambda: (store.get(rec.id) or rec).state is CommandState.SUCCEEDED, 60), store.history(rec.id)
            assert dev.executed == [rec.id]
        finally:
            dev.disconnect()
    finally:
        hub.stop()
