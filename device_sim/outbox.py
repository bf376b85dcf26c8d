"""The store-and-forward buffer of one device: what it keeps, drops, re-sends and gives up.

This is the delivery guarantee's device half (firmware_protocol.md section 5), pure logic
with no I/O so that its rules are unit-tested on their own:

* every telemetry and alert message is kept, in seq order, until a watermark covers it;
* a full buffer drops its **oldest** message (never one from the middle), so the buffer is
  always a contiguous tail of the boot's seqs and ``released`` (the highest seq the device no
  longer holds) is well defined; while ``released`` is above the latest watermark, new
  messages carry ``dropped = released`` (5.4);
* re-sends happen only by rule R1 (reconnect: the un-PUBACKed ones when the broker kept the
  session, all when it did not), R2 (a watermark shows a hole below messages the hub has:
  re-send what is in the hole when its last send is older than the hub's ``max``; after
  ``max_resends`` such re-sends the oldest message is given up instead) and R3 (rebirth request:
  everything). Never on a timer: while the hub is down the broker holds what was sent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from protocol.limits import LIMITS
from protocol.models import Watermark


class Entry:
    """One kept message, with what R2 needs: how often it was sent and its mark."""

    __slots__ = ("boot", "seq", "payload", "topic", "pubacked", "sends", "resends", "mark", "made_at")

    def __init__(self, boot: int, seq: int, payload: bytes, topic: str, made_at: float) -> None:
        self.boot = boot
        self.seq = seq
        self.payload = payload
        self.topic = topic
        self.pubacked = False
        self.sends = 0
        self.resends = 0
        """Re-sends by rule R2: each one followed a proof that the previous send was lost."""
        self.mark = seq
        """The highest seq the device had produced when it last sent this message."""
        self.made_at = made_at
        """``time.monotonic()`` when the message was produced."""

    def __repr__(self) -> str:
        return f"Entry(boot={self.boot}, seq={self.seq}, sends={self.sends}, resends={self.resends}, mark={self.mark})"


@dataclass
class WatermarkOutcome:
    """What one watermark did to the buffer."""

    covered: int = 0
    resend: list[Entry] = field(default_factory=list)
    """Send these again now (rule R2), oldest first."""
    abandoned: list[Entry] = field(default_factory=list)
    """Given up after ``max_resends`` re-sends by rule R2; declared through ``dropped``."""


class Outbox:
    """The bounded buffer of one device (one event loop owns it)."""

    def __init__(self, capacity: int, boot: int, max_resends: int = LIMITS.max_resends) -> None:
        self.capacity = capacity
        self.max_resends = max_resends
        self.entries: deque[Entry] = deque()
        self.boot = boot
        self.last_seq = 0
        """The newest seq produced in this boot (taken by a message, kept or not)."""
        self.watermark_seq = 0
        """``seq`` of the latest watermark of this boot (0: none yet)."""
        self.seen_watermark = False

    def new_boot(self, boot: int) -> None:
        """A reboot: seq restarts; messages of earlier boots stay until a watermark of a later boot releases them."""
        self.boot = boot
        self.last_seq = 0
        self.watermark_seq = 0

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------------ producing

    def took_seq(self, seq: int) -> None:
        """A message of this boot took ``seq`` (kept or not: a seq never sent is given up at once)."""
        self.last_seq = max(self.last_seq, seq)

    def add(self, entry: Entry) -> list[Entry]:
        """Keep ``entry``; returns the oldest messages dropped to make room (given up, section 5.2)."""
        self.took_seq(entry.seq)
        victims = []
        while len(self.entries) >= self.capacity:
            victims.append(self.entries.popleft())
        self.entries.append(entry)
        return victims

    @property
    def released(self) -> int:
        """The highest seq of this boot such that the device holds no message at or below it."""
        for entry in self.entries:
            if entry.boot == self.boot:
                return entry.seq - 1
        return self.last_seq

    def dropped_field(self) -> int:
        """The ``dropped`` value for the next new message (0: nothing to declare)."""
        released = self.released
        return released if released > self.watermark_seq else 0

    def mark_sent(self, entry: Entry) -> None:
        """Record one more send of ``entry`` (its mark is the newest seq produced at this moment)."""
        entry.sends += 1
        entry.mark = max(entry.seq, self.last_seq)

    # ------------------------------------------------------------------ the hub's answers

    def on_watermark(self, wm: Watermark) -> WatermarkOutcome:
        """Apply a watermark: drop what it covers, and apply rule R2 to a hole it shows."""
        out = WatermarkOutcome()
        self.seen_watermark = True
        before = len(self.entries)
        if wm.boot != self.boot:
            # another boot: PUBACKed messages of the boots before it are released (the hub moved on)
            self.entries = deque(e for e in self.entries if not (e.boot < wm.boot and e.pubacked))
            out.covered = before - len(self.entries)
            return out
        self.watermark_seq = wm.seq
        self.entries = deque(e for e in self.entries if not (e.boot < self.boot and e.pubacked)
                             and not (e.boot == self.boot and e.seq <= wm.seq))
        out.covered = before - len(self.entries)
        if not wm.next:
            return out
        at_head = True
        for entry in list(self.entries):
            if entry.boot != self.boot:
                continue  # an earlier boot's leftovers: not part of this boot's seq stream
            if entry.seq >= wm.next:
                break
            if entry.mark >= wm.max:
                at_head = False  # re-sent after the newest message the hub has: that copy may be on its way
                continue
            if entry.resends >= self.max_resends:
                if at_head:
                    self.entries.remove(entry)
                    out.abandoned.append(entry)
                continue
            at_head = False
            entry.resends += 1
            out.resend.append(entry)
        return out

    def on_puback(self, entry: Entry) -> bool:
        """The broker acknowledged ``entry``; True the first time."""
        if entry.pubacked:
            return False
        entry.pubacked = True
        return True

    def on_reconnect(self, session_present: bool) -> list[Entry]:
        """Rule R1: what to re-send after a reconnect."""
        if session_present:
            return [e for e in self.entries if not e.pubacked]
        return list(self.entries)

    def everything(self) -> list[Entry]:
        """Rule R3 (rebirth request): every kept message."""
        return list(self.entries)

    def oldest_made_at(self) -> float | None:
        """``time.monotonic()`` at which the oldest kept message was produced."""
        return self.entries[0].made_at if self.entries else None
