"""Devices with a wrong clock: every skewed message is counted, the log gets one summary line per period."""

from __future__ import annotations

from hub.skew import WORST_SHOWN, SkewTally


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
