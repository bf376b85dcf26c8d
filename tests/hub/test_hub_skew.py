"""Devices with a wrong clock: every skewed message is counted, the log gets one summary line per period."""

from __future__ import annotations

import logging

from hub.queries import readings as query_readings
from hub.skew import WORST_SHOWN, SkewTally
from hub_helpers import NOW_MS, publish, stop_client, stored_messages, telemetry
from protocol.codec import encode
from protocol.topics import MessageClass
from support import add_device, connect, wait_for


def test_a_period_of_skewed_messages_becomes_one_line_naming_the_worst_devices() -> None:
    tally = SkewTally()
    for i in range(1000):
        tally.add(f"dev-{i % 8}", -86_400.0 - (i % 8))
    batch = SkewTally()
    batch.add("dev-far", 3 * 86_400.0)
    tally.merge(batch)
    line = tally.summary(60.0)
    assert line is not None and "\n" not in line
    assert "messages=1001 devices=9 in the last 60 s" in line
    assert line.index("dev-far +259200s x1") < line.index("dev-7 -86407s x125")  # largest offset first
    assert f"(+{9 - WORST_SHOWN} more)" in line


def test_the_next_period_starts_empty_and_a_quiet_period_logs_nothing() -> None:
    tally = SkewTally()
    tally.add("dev-a", 400.0)
    assert tally.summary(60.0) is not None
    assert tally.summary(60.0) is None
    assert tally.messages == 0 and tally.by_device == {}


def test_the_hub_flags_counts_and_summarizes_skewed_messages(embedded_broker, registry, db_path, start_hub,  # type: ignore[no-untyped-def]
                                                             caplog) -> None:
    hub = start_hub(embedded_broker.port)
    client = connect(embedded_broker.port, add_device(registry, "skewy"))
    now_ms = NOW_MS()
    offsets_s = [2 * 3600, -5 * 3600, 0, 3 * 3600, -3600]  # ahead, behind, on time, ahead, behind
    with caplog.at_level(logging.INFO, logger="fleet.hub.ingest"):
        infos = [publish(client, "skewy", MessageClass.TELEMETRY, encode(telemetry(seq, ts=now_ms + off * 1000)))
                 for seq, off in enumerate(offsets_s, start=1)]
        for info in infos:
            info.wait_for_publish(10)
        assert wait_for(lambda: stored_messages(db_path) == 5)
        flags = {r["seq"]: r["skewed"] for r in query_readings(db_path, "skewy")}
        assert flags == {1: 1, 2: 1, 3: 0, 4: 1, 5: 1}
        assert hub.stats["skewed"] == 4
        stop_client(client)
        hub.stop()  # the summary of the period so far is logged on the way out
    lines = [r.getMessage() for r in caplog.records if "clock skew" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "messages=4 devices=1" in lines[0] and "skewy -18000s x4" in lines[0]  # the largest offset, behind
