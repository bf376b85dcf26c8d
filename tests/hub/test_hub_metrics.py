"""Prometheus metrics of a running hub, scraped over HTTP like a real Prometheus would."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from hub.service import Hub
from hub_helpers import hub_settings, publish, publish_seqs, stop_client
from protocol.topics import MessageClass
from support import add_device, connect, wait_for


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_count_what_the_hub_did(embedded_broker, registry, db_path):
    dev = add_device(registry, "m-1")
    hub = Hub(hub_settings(db_path, embedded_broker.port, metrics_port=0)).start()
    try:
        assert hub.metrics_port
        client = connect(embedded_broker.port, dev)
        sent_at = time.time()
        publish_seqs(client, "m-1", range(1, 11))
        publish(client, "m-1", MessageClass.TELEMETRY, b"\xff garbage").wait_for_publish(5)
        publish_seqs(client, "m-1", [5])  # a duplicate
        stop_client(client)

        def persisted() -> float:
            return scrape(hub.metrics_port).get(("fleet_hub_messages_persisted_total", (("class", "t"),)), 0)

        def received() -> float:
            return scrape(hub.metrics_port).get(("fleet_hub_messages_received_total", (("class", "t"),)), 0)

        # the duplicate, sent last, may be committed in a later batch than the ten
        assert wait_for(lambda: persisted() == 10 and received() == 11, timeout=10)
        m = scrape(hub.metrics_port)
        assert m[("fleet_hub_messages_received_total", (("class", "t"),))] == 11
        assert m[("fleet_hub_deadletters_total", (("reason", "undecodable"),))] == 1
        assert m[("fleet_hub_duplicates_total", ())] == 1
        assert m[("fleet_hub_readings_total", ())] == 10
        assert m[("fleet_hub_batch_commit_seconds_count", ())] >= 1
        assert ("fleet_hub_queue_depth", ()) in m and ("fleet_devices_online", ()) in m
        assert sent_at <= m[("fleet_hub_last_commit_timestamp_seconds", ())] <= time.time()
    finally:
        hub.stop()
