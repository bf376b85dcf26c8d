"""Presence: birth and will, and a staleness timeout that needs no will from the broker."""

from __future__ import annotations

import time

from hub.storage import open_database as connect_db
from hub.storage.queries import presence as query_presence, presence_events as query_presence_events
from hub_helpers import birth, publish, publish_seqs, stop_client, stored_messages
from protocol.codec import encode
from protocol.models import Status
from protocol.topics import MessageClass
from support import add_device, connect, load_factor, wait_for


def presence(db_path, device_id):  # type: ignore[no-untyped-def]
    conn = connect_db(db_path)
    try:
        return query_presence(conn).get(device_id)
    finally:
        conn.close()


def test_silent_device_goes_offline_within_its_window_without_a_will(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port, staleness_min_s=0.5, staleness_factor=2.0)
    client = connect(embedded_broker.port, add_device(registry, "quiet-1"), keepalive=60)
    publish(client, "quiet-1", MessageClass.STATUS, encode(birth(boot=3, interval_s=1, fw="2.1.0")),
            retain=True).wait_for_publish(5)
    assert wait_for(lambda: (presence(db_path, "quiet-1") or {}).get("state") == "online", 5)
    row = presence(db_path, "quiet-1")
    assert (row["fw"], row["boot"], row["interval_s"]) == ("2.1.0", 3, 1)
    went_online = time.monotonic()
    # the connection stays up (keepalive 60 s), so no broker ever fires a will
    assert wait_for(lambda: presence(db_path, "quiet-1")["state"] == "offline", 30)
    # window 2 s, checked every 0.2 s; a loaded machine may check late
    assert time.monotonic() - went_online < 2.0 + 1.0 * load_factor()
    assert presence(db_path, "quiet-1")["state_reason"] == "stale"
    # its next message brings it back
    publish_seqs(client, "quiet-1", [1], boot=3)
    assert wait_for(lambda: presence(db_path, "quiet-1")["state"] == "online", 5)
    conn = connect_db(db_path)
    events = [(e["state"], e["reason"]) for e in query_presence_events(conn, "quiet-1")]
    conn.close()
    assert events == [("online", "birth"), ("offline", "stale"), ("online", "message")]
    stop_client(client)


def test_birth_and_will(embedded_broker, registry, db_path, start_hub):
    start_hub(embedded_broker.port)
    client = connect(embedded_broker.port, add_device(registry, "bw-1"))
    publish(client, "bw-1", MessageClass.STATUS, encode(birth(boot=1)), retain=True).wait_for_publish(5)
    assert wait_for(lambda: (presence(db_path, "bw-1") or {}).get("state") == "online", 5)
    will = Status(state="offline", boot=1)
    publish(client, "bw-1", MessageClass.STATUS, encode(will), retain=True).wait_for_publish(5)
    assert wait_for(lambda: presence(db_path, "bw-1")["state"] == "offline", 5)
    # a message after the will does not revive it; a new birth does
    publish_seqs(client, "bw-1", [1])
    # marker: the message is stored, so the batch that held it has updated presence too
    assert wait_for(lambda: stored_messages(db_path) == 1, 5)
    assert presence(db_path, "bw-1")["state"] == "offline"
    publish(client, "bw-1", MessageClass.STATUS, b"", retain=True).wait_for_publish(5)  # cleared: ignored
    publish(client, "bw-1", MessageClass.STATUS, encode(birth(boot=2, fw="1.1")), retain=True).wait_for_publish(5)
    assert wait_for(lambda: presence(db_path, "bw-1")["state"] == "online", 5)
    assert presence(db_path, "bw-1")["boot"] == 2
    stop_client(client)


def test_a_new_boot_while_online_shows_in_the_presence_history(embedded_broker, registry, db_path, start_hub):
    """A hard-killed `fleet up` takes the broker down with the hub: no will is ever published, the devices
    table still says online at the old boot, and the restarted devices birth with a new boot. The history
    (and the dashboard's device screen) must show that new boot, not end at the old one."""
    from hub.overview import OverviewLoader

    hub = start_hub(embedded_broker.port)
    client = connect(embedded_broker.port, add_device(registry, "hk-1"))
    publish(client, "hk-1", MessageClass.STATUS, encode(birth(boot=4)), retain=True).wait_for_publish(5)
    assert wait_for(lambda: (presence(db_path, "hk-1") or {}).get("state") == "online", 30)
    first_since = presence(db_path, "hk-1")["state_since"]
    hub.stop()  # as after a kill: nothing marks the device offline

    start_hub(embedded_broker.port)
    publish(client, "hk-1", MessageClass.STATUS, encode(birth(boot=5)), retain=True).wait_for_publish(5)
    assert wait_for(lambda: presence(db_path, "hk-1")["boot"] == 5, 30)
    row = presence(db_path, "hk-1")
    assert row["state"] == "online" and row["state_since"] > first_since
    conn = connect_db(db_path)
    events = [(e["state"], e["reason"], e["boot"]) for e in query_presence_events(conn, "hk-1")]
    conn.close()
    assert events == [("online", "birth", 4), ("online", "birth", 5)]
    loader = OverviewLoader(db_path)
    detail = loader.load_device("hk-1")
    loader.close()
    assert detail.boot == 5 and [p.boot for p in detail.presence] == [5, 4]  # newest first
    # the stored copy of the same birth a resubscribing hub receives is no new boot: no event
    publish(client, "hk-1", MessageClass.STATUS, encode(birth(boot=5)), retain=True).wait_for_publish(5)
    publish_seqs(client, "hk-1", [1], boot=5)
    assert wait_for(lambda: stored_messages(db_path) == 1, 30)  # marker: the batch with the repeat is committed
    conn = connect_db(db_path)
    assert len(query_presence_events(conn, "hk-1")) == 2
    conn.close()
    stop_client(client)
