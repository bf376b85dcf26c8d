"""Backpressure: with a tiny queue the hub stops reading and acking instead of dropping."""

from __future__ import annotations

from hub_helpers import publish_seqs, stop_client, stored_messages
from support import add_device, connect, wait_for


def test_tiny_queue_loses_nothing(mosquitto, registry, db_path, start_hub):
    add_device(registry, "bp-1")
    hub = start_hub(mosquitto.port, queue_size=10, batch_max_rows=5)
    client = connect(mosquitto.port, None, client_id="bp-1")
    publish_seqs(client, "bp-1", range(1, 2001))
    assert wait_for(lambda: stored_messages(db_path) == 2000, 15), stored_messages(db_path)
    assert hub.stats["batches"] >= 400  # batches stayed within 5 messages
    assert hub.stats["gaps"] == 0 and hub.stats["duplicates"] == 0
    stop_client(client)
