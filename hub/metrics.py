"""Prometheus metrics of one hub, served over HTTP on 127.0.0.1 (``fleet hub --metrics-port``).

Nothing is counted twice: a collector reads the hub's own counters at scrape time, so the
ingest hot path carries no extra instrumentation. Each hub has its own registry, so
several hubs in one process (tests) never share figures.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COMMAND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Buckets:
    """A small cumulative histogram: observe values, read counts per upper bound."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.bounds, value)] += 1
            self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        with self._lock:
            counts, total = list(self.counts), self.sum
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), counts):
            running += n
            out.append((bound, running))
        return out, total


class HubCollector(Collector):
    """Turns ``stats()`` (the hub's counters and gauges) into Prometheus metric families."""

    def __init__(self, stats: Callable[[], dict[str, Any]], commit: Buckets, command_latency: Buckets,
                 command_states: Callable[[], dict[str, int]],
                 alarms: Callable[[], dict[str, Any]] | None = None) -> None:
        self.stats = stats
        self.alarms = alarms
        self.commit = commit
        self.command_latency = command_latency
        self.command_states = command_states

    def collect(self) -> Iterator[Any]:
        s = self.stats()
        received = CounterMetricFamily("fleet_hub_messages_received", "Messages taken from the broker, by class",
                                       labels=["class"])
        for cls, n in sorted(s.get("received", {}).items()):
            received.add_metric([cls], n)
        yield received
        persisted = CounterMetricFamily("fleet_hub_messages_persisted", "Messages stored, by class", labels=["class"])
        for cls, n in sorted(s.get("persisted", {}).items()):
            persisted.add_metric([cls], n)
        yield persisted
        for key, help_text in (("readings", "Readings stored"), ("duplicates", "Redelivered messages dropped"),
                               ("gaps", "Gaps in device seq numbers detected"),
                               ("skewed", "Messages whose device clock was off beyond the threshold")):
            yield CounterMetricFamily(f"fleet_hub_{key}", help_text, value=s.get(key, 0))
        # named in firmware_protocol.md (4.1, 5.4)
        yield CounterMetricFamily("fleet_device_resets", "Births whose boot went back: a new device incarnation",
                                  value=s.get("resets", 0))
        yield CounterMetricFamily("fleet_gaps_dropped", "Seqs the devices declared given up (gaps closed as dropped)",
                                  value=s.get("dropped", 0))
        # firmware_protocol.md 13: configuration sent, and readings outside a device's declared range (kept, flagged)
        yield CounterMetricFamily("fleet_config_sent", "ConfigSets sent to devices", value=s.get("config_sent", 0))
        yield CounterMetricFamily("fleet_readings_out_of_declared_range",
                                  "Readings outside the range their device declares (stored, flagged)",
                                  value=s.get("config_out_of_declared_range", 0))
        dead = CounterMetricFamily("fleet_hub_deadletters", "Messages refused, by reason", labels=["reason"])
        for reason, n in sorted(s.get("deadletters", {}).items()):
            dead.add_metric([reason], n)
        yield dead
        yield CounterMetricFamily("fleet_hub_write_failures", "Batch commits the database refused (retried)",
                                  value=s.get("write_failures", 0))
        yield GaugeMetricFamily("fleet_hub_store_failing", "1 while the database refuses writes (nothing is acked)",
                                value=s.get("store_failing", 0))
        yield GaugeMetricFamily("fleet_hub_queue_depth", "Messages waiting for the writer", value=s.get("queue_depth", 0))
        yield GaugeMetricFamily("fleet_hub_ingest_lag_seconds", "Age of the oldest message waiting for the writer",
                                value=s.get("lag_s", 0.0))
        yield GaugeMetricFamily("fleet_hub_last_commit_timestamp_seconds",
                                "Unix time of the last committed batch (0 before the first): alert when it stops moving "
                                "while devices send", value=s.get("last_commit_at", 0.0))
        yield GaugeMetricFamily("fleet_devices_online", "Devices the hub counts as online", value=s.get("online", 0))
        yield GaugeMetricFamily("fleet_devices_sleeping", "Sleepy devices between two wakes (firmware_protocol.md 4.5)",
                                value=s.get("sleeping", 0))
        yield CounterMetricFamily("fleet_presence_flaps", "Devices back online soon after going offline (or before "
                                  "their will took effect)", value=s.get("presence_flaps", 0))
        if self.alarms is not None:
            yield from self._alarm_metrics(self.alarms())
        buckets, total = self.commit.cumulative()
        yield HistogramMetricFamily("fleet_hub_batch_commit_seconds", "Time to commit one batch",
                                    buckets=buckets, sum_value=total)
        states = GaugeMetricFamily("fleet_commands", "Commands by current state", labels=["state"])
        for state, n in sorted(self.command_states().items()):
            states.add_metric([state], n)
        yield states
        buckets, total = self.command_latency.cumulative()
        yield HistogramMetricFamily("fleet_command_latency_seconds", "From creation to a final state",
                                    buckets=buckets, sum_value=total)


    @staticmethod
    def _alarm_metrics(a: dict[str, Any]) -> Iterator[Any]:
        open_ = GaugeMetricFamily("fleet_alarms_open", "Alarms not cleared, by state and severity",
                                  labels=["state", "severity"])
        for (state, severity), n in sorted(a.get("open", {}).items()):
            open_.add_metric([state, severity], n)
        yield open_
        yield CounterMetricFamily("fleet_alarms_raised", "Alarms raised since the hub started", value=a.get("raised", 0))
        yield CounterMetricFamily("fleet_alarms_cleared", "Alarms cleared since the hub started",
                                  value=a.get("cleared", 0))
        yield CounterMetricFamily("fleet_alarm_flaps", "Cleared alarms raised again within the flap window",
                                  value=a.get("flaps", 0))
        yield GaugeMetricFamily("fleet_alarm_rules", "Alarm rules the hub evaluates", value=a.get("rules", 0))


def serve_metrics(collector: Collector, port: int, addr: str = "127.0.0.1") -> tuple[Any, threading.Thread]:
    """Serve ``collector`` on http://addr:port/metrics; returns (server, thread) for shutdown."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return server, thread
