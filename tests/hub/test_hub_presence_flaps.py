"""Presence hysteresis: a will followed soon by a birth is a flap, not an offline/online pair; a will alone takes effect."""

from __future__ import annotations

from hub.storage import open_database as connect_db
from hub.storage.queries import presence as query_presence
from hub_helpers import birth, publish, publish_seqs, stop_client, stored_messages
from protocol.codec import encode
from protocol.models import Status
from protocol.topics import MessageClass
from support import add_device, connect, wait_for


def device_row(db_path, device_id):  # type: ignore[no-untyped-def]
    conn = connect_db(db_path)
    try:
        row = conn.execute("SELECT state, state_reason, flaps FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        events = [tuple(r) for r in conn.execute(
            "SELECT state, reason FROM presence_events WHERE device_id = ? ORDER BY id", (device_id,))]
        return row, events
    finally:
        conn.close()


def test_a_quick_reconnect_is_a_flap_not_an_offline_online_pair(embedded_broker, registry, db_path, start_hub):
    hub = start_hub(embedded_broker.port, offline_hysteresis_s=30.0)
    client = connect(embedded_broker.port, add_device(registry, "flap-1"))
    publish(client, "flap-1", MessageClass.STATUS, encode(birth(boot=1)), retain=True).wait_for_publish(5)
    assert wait_for(lambda: (device_row(db_path, "flap-1")[0] or ("",))[0] == "online", 5)
    publish(client, "flap-1", MessageClass.STATUS, encode(Status(state="offline", boot=1)), retain=True).wait_for_publish(5)
    publish(client, "flap-1", MessageClass.STATUS, encode(birth(boot=1)), retain=True).wait_for_publish(5)
    assert wait_for(lambda: device_row(db_path, "flap-1")[0][2] == 1, 5)  # the birth cancelled the will
    publish_seqs(client, "flap-1", [1])
    assert wait_for(lambda: stored_messages(db_path) == 1, 5)  # marker: later than both status messages
    row, events = device_row(db_path, "flap-1")
    assert row == ("online", "birth", 1)
    assert events == [("online", "birth")]
    assert hub.stats["presence_flaps"] == 1
    stop_client(client)


def test_a_will_takes_effect_after_the_hysteresis(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port, offline_hysteresis_s=0.5, presence_check_s=0.1)
    client = connect(embedded_broker.port, add_device(registry, "will-1"))
    publish(client, "will-1", MessageClass.STATUS, encode(birth(boot=1)), retain=True).wait_for_publish(5)
    assert wait_for(lambda: (device_row(db_path, "will-1")[0] or ("",))[0] == "online", 5)
    publish(client, "will-1", MessageClass.STATUS, encode(Status(state="offline", boot=1)), retain=True).wait_for_publish(5)
    assert wait_for(lambda: device_row(db_path, "will-1")[0][0] == "offline", 5)
    row, events = device_row(db_path, "will-1")
    assert row == ("offline", "will", 0) and events == [("online", "birth"), ("offline", "will")]
    conn = connect_db(db_path)
    try:
        assert query_presence(conn)["will-1"]["state"] == "offline"
    finally:
        conn.close()
    stop_client(client)
