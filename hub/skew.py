"""Devices whose clock is off: counted per message, reported as one summary line per period.

A device without a real-time clock sends a wrong ``ts`` in every message; a log line per
message cost the hub a third of its throughput. The writer counts each skewed message here
(and in its stats, which the metrics export), and the ingest loop asks for :meth:`summary`
now and then: one line naming how many messages and devices, and the worst offenders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SKEW_SUMMARY_S = 60.0
"""How often the ingest loop logs the skew summary (only when something was skewed)."""
WORST_SHOWN = 5
"""Devices named in one summary line (the largest offsets)."""


@dataclass
class SkewTally:
    """Skewed messages since the last summary, per device, with the largest offset seen."""

    messages: int = 0
    by_device: dict[str, tuple[int, float]] = field(default_factory=dict)
    """device id -> (messages, offset in seconds with the largest magnitude; device minus hub)."""

    def add(self, device_id: str, offset_s: float, messages: int = 1) -> None:
        """Count ``messages`` skewed messages of ``device_id`` whose clock was at most ``offset_s`` ahead (negative:
        behind)."""
        self.messages += messages
        n, worst = self.by_device.get(device_id, (0, 0.0))
        self.by_device[device_id] = (n + messages, offset_s if abs(offset_s) > abs(worst) else worst)

    def merge(self, other: SkewTally) -> None:
        """Add the counts of ``other`` (a committed batch) to this tally."""
        self.messages += other.messages
        for device_id, (n, offset) in other.by_device.items():
            mine, worst = self.by_device.get(device_id, (0, 0.0))
            self.by_device[device_id] = (mine + n, offset if abs(offset) > abs(worst) else worst)

    def summary(self, period_s: float) -> str | None:
        """One log line for the tally (None when nothing was skewed), then start a new period."""
        if not self.messages:
            return None
        worst = sorted(self.by_device.items(), key=lambda kv: -abs(kv[1][1]))[:WORST_SHOWN]
        named = ", ".join(f"{dev} {offset:+.0f}s x{n}" for dev, (n, offset) in worst)
        more = f" (+{len(self.by_device) - len(worst)} more)" if len(self.by_device) > len(worst) else ""
        line = (f"clock skew messages={self.messages} devices={len(self.by_device)} in the last {period_s:.0f} s; "
                f"largest offsets: {named}{more}")
        self.messages = 0
        self.by_device = {}
        return line
