"""A flood of denied requests produces a few short log lines (first one, then a count), not one per request.

Before: a flood of denied subscriptions wrote 47 MB of broker log in 10 s, topics logged in full
up to 65 KB per line.
"""

from __future__ import annotations

import logging
import re
import struct
import time
from collections.abc import Iterator

import pytest
from raw_mqtt import packet, publish_packet, raw_session, read_packet

from broker.background import BackgroundBroker
from broker.config import BrokerSettings
from broker.log_summary import LogSummary, clip
from broker.server import free_port
from support import add_device, wait_for

SUBACK = 9


@pytest.fixture
def quick_summary_broker(db_path, registry) -> Iterator[BackgroundBroker]:  # type: ignore[no-untyped-def]
    with BackgroundBroker(BrokerSettings(port=free_port(), db=db_path, log_summary_s=1.0)) as broker:
        yield broker


def test_denial_flood_writes_a_bounded_log(quick_summary_broker, registry, caplog):
    port = quick_summary_broker.port
    creds = add_device(registry, "noisy")
    registry.set_quota("noisy", msgs_per_s=0, bytes_per_s=0)  # not slowed down: the log itself must hold
    caplog.set_level(logging.INFO, logger="fleet")
    sock, _, rc = raw_session(port, "noisy", username="noisy", password=creds.password)
    assert rc == 0
    long_topic = "d/other/" + "x" * 8000
    n = 400
    started = time.monotonic()
    for i in range(1, n + 1):
        sub_body = struct.pack("!H", i) + struct.pack("!H", len(long_topic)) + long_topic.encode() + b"\x01"
        sock.sendall(publish_packet(long_topic.replace("other", "victim"), b"x") + packet(0x82, sub_body))
    for _ in range(n):  # every SUBSCRIBE answered (refused): everything before has been handled
        ptype, _, body = read_packet(sock)
        assert (ptype, body[2:]) == (SUBACK, b"\x80")
    elapsed = time.monotonic() - started
    sock.close()

    def logged(kind: str) -> int:
        """Denials of ``kind`` accounted for in the log: first lines plus the counts of the summaries."""
        lines = [r.getMessage() for r in caplog.records]
        firsts = sum(1 for line in lines if line.startswith(f"denied action={kind} "))
        counts = sum(int(m.group(1)) for line in lines if line.startswith(f"denied_{kind} repeated")
                     for m in [re.search(r"count=(\d+)", line)] if m)
        return firsts + counts

    assert wait_for(lambda: logged("subscribe") == n and logged("publish") == n, timeout=10), \
        (logged("subscribe"), logged("publish"))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("fleet.broker")]
    total = sum(len(line) for line in lines)
    print(f"{2 * n} denials in {elapsed:.1f} s -> {len(lines)} log lines, {total} bytes")
    # two kinds, each at most a first line and a summary per 1 s interval
    assert len(lines) <= 4 * (elapsed + 3), [line[:60] for line in lines]
    assert max(len(line) for line in lines) < 400, "a topic was logged in full"


def test_log_summary_counts_per_key_and_bounds_its_keys(caplog):
    now = [0.0]
    notes = LogSummary(logging.getLogger("fleet.test.summary"), interval_s=10, max_keys=3, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="fleet.test.summary")
    for _ in range(5):
        notes.event("denied", "a", "denied %s", "a")
    for key in ("b", "c", "d", "e", "f"):  # beyond max_keys: one shared entry
        notes.event("denied", key, "denied %s", key)
    now[0] = 11.0
    notes.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["denied a", "denied b", "denied c", "denied d",
                        "denied repeated key=a count=4 over_s=11", "denied repeated key=* count=2 over_s=11"]


def test_clip_escapes_control_characters_and_cuts_long_text():
    assert clip("d/x/t\x1b[2J") == "d/x/t\\x1b[2J"
    cut = clip("y" * 1000)
    assert cut.startswith("y" * 120) and cut.endswith("...(1000 chars)")
