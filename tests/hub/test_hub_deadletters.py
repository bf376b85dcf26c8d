"""Bad input lands in dead letters with its raw bytes and reason; good input around it is stored."""

from __future__ import annotations

import cbor2

from hub.storage import open_database as connect_db
from hub.storage.queries import deadletter_counts, deadletters as query_deadletters
from hub_helpers import stop_client, stored_messages, telemetry
from protocol.codec import encode
from protocol.errors import Reason
from support import add_device, connect, wait_for

BAD: list[tuple[str, str, bytes]] = [
    # (reason, topic, payload)
    (Reason.UNDECODABLE, "d/good-1/t", b"\xff\xfe not cbor"),
    (Reason.SCHEMA, "d/good-1/t", b'{"boot":1,"seq":"x","ts":1,"readings":[]}'),
    (Reason.UNKNOWN_METRIC, "d/good-1/t", b'{"boot":1,"seq":900,"ts":1700000000000,"readings":[{"metric":"flux","value":1.0}]}'),
    (Reason.OUT_OF_RANGE, "d/good-1/t", b'{"boot":1,"seq":901,"ts":1700000000000,"readings":[{"metric":"humidity","value":140.0}]}'),
    (Reason.OVERSIZED, "d/good-1/t", b"{" + b" " * 5000 + b"}"),
    (Reason.BAD_TOPIC, "d/bad.id/t", encode(telemetry(1))),
    (Reason.UNKNOWN_DEVICE, "d/ghost-9/t", encode(telemetry(1))),
]


def test_each_kind_of_bad_input_is_dead_lettered_and_good_input_kept(mosquitto, registry, db_path, start_hub):
    add_device(registry, "good-1")
    hub = start_hub(mosquitto.port)
    client = connect(mosquitto.port, None)  # anonymous: mosquitto lets it publish anything
    seq = 0
    infos = []
    for reason, topic, payload in BAD:
        seq += 1
        infos.append(client.publish("d/good-1/t", encode(telemetry(seq)), qos=1))
        infos.append(client.publish(topic, payload, qos=1))
    seq += 1
    infos.append(client.publish("d/good-1/t", cbor2.dumps({"b": 1, "q": seq, "t": 1700000000000, "r": [[0, 2, 50.0]]}),
                                qos=1))
    for info in infos:
        info.wait_for_publish(10)
    assert wait_for(lambda: sum(hub.stats.get("deadletters", {}).values()) >= len(BAD))
    assert wait_for(lambda: stored_messages(db_path) == seq)
    conn = connect_db(db_path)
    assert deadletter_counts(conn) == {r.value: 1 for r, _, _ in BAD}
    assert hub.stats["deadletters"] == {r.value: 1 for r, _, _ in BAD}
    rows = {r["reason"]: r for r in query_deadletters(conn)}
    assert bytes.fromhex(rows["undecodable"]["payload_hex"]) == b"\xff\xfe not cbor"
    assert rows["bad_topic"]["topic"] == "d/bad.id/t" and rows["bad_topic"]["device_id"] is None
    assert rows["unknown_device"]["device_id"] == "ghost-9"
    assert rows["oversized"]["size"] == 5002
    conn.close()
    # the hub is still up and ingesting
    client.publish("d/good-1/t", encode(telemetry(seq + 1)), qos=1).wait_for_publish(10)
    assert wait_for(lambda: stored_messages(db_path) == seq + 1)
    stop_client(client)


def test_revoked_device_is_dead_lettered(mosquitto, registry, db_path, start_hub):
    add_device(registry, "old-1")
    registry.revoke("old-1")
    hub = start_hub(mosquitto.port)
    client = connect(mosquitto.port, None)
    client.publish("d/old-1/t", encode(telemetry(1)), qos=1).wait_for_publish(10)
    assert wait_for(lambda: hub.stats.get("deadletters", {}).get("unknown_device") == 1)
    assert stored_messages(db_path) == 0
    stop_client(client)
