"""Prometheus metrics of the embedded broker (``fleet broker --metrics-port``), served on 127.0.0.1.

The guards count on the broker's event loop (:class:`~broker.stats.BrokerCounters`); once a
second the broker publishes a copy (a new dict, swapped in whole), and the collector, which runs
on prometheus-client's HTTP thread, reads only that copy: no counter is read while the loop
writes it, and the hot paths carry no extra instrumentation. One registry per broker, as the hub's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# counter name -> help; every field of BrokerCounters but the gauge
COUNTERS = {
    "logins": "Logins accepted",
    "logins_refused": "Logins refused, for any reason (unknown id, bad secret, backing off)",
    "logins_throttled": "Logins refused without a check because the id or address was backing off",
    "denials": "Publishes and subscriptions refused by the topic rules",
    "quota_waits": "Packets read only after the sender was held back by its quota",
    "quota_held_s": "Seconds connections were held back by their quotas",
    "quota_disconnects": "Connections closed for being held back longer than the hard limit",
    "inflight_disconnects": "Connections closed for too many QoS 2 messages awaiting PUBREL",
    "protocol_violations": "Connections closed at once for a malformed or forbidden packet",
    "unsupported_protocol": "CONNECTs of another protocol level, answered with CONNACK 0x01",
    "retain_refused": "Retained PUBLISHes on device topics that may not retain: delivered, not stored",
    "deliveries_dropped": "Messages not queued because a subscriber already had max_queued_messages pending",
}


class BrokerCollector(Collector):
    """Turns the broker's published counter snapshot into Prometheus metric families."""

    def __init__(self, snapshot: Callable[[], dict[str, float]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()
        for key, help_text in COUNTERS.items():
            yield CounterMetricFamily(f"fleet_broker_{key}", help_text, value=s.get(key, 0))
        yield GaugeMetricFamily("fleet_broker_connections", "Clients logged in now", value=s.get("connections", 0))
