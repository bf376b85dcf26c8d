"""Retention: readings older than the limit are deleted in small chunks while ingest goes on."""

from __future__ import annotations

from hub_helpers import publish_seqs, stop_client, stored_readings
from support import add_device, connect, wait_for


def test_old_readings_deleted_in_chunks(embedded_broker, registry, db_path, start_hub):
    hub = start_hub(embedded_broker.port, retain_days=2.0 / 86400, retention_check_s=0.2, retention_chunk=1000)
    client = connect(embedded_broker.port, add_device(registry, "ret-1"))
    publish_seqs(client, "ret-1", range(1, 51), n=50)  # 2500 readings
    assert wait_for(lambda: stored_readings(db_path) == 2500, 10)
    assert wait_for(lambda: stored_readings(db_path) == 0, 8)
    assert hub.stats["retention_deleted"] == 2500
    assert hub.stats["retention_chunks"] >= 3  # 1000 + 1000 + 500, never all at once
    publish_seqs(client, "ret-1", range(51, 53), n=10)  # fresh readings are kept
    assert wait_for(lambda: stored_readings(db_path) == 20, 5)
    stop_client(client)
