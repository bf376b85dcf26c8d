"""Sequence tracking per device stream: gaps in ``seq`` and the contiguous watermark.

Pure logic, no SQL: :class:`SeqTracker` says which gaps open, shrink, split, close or are
given up when a seq is dealt with (stored, or dead-lettered with a readable seq) or when the
device declares seqs dropped (firmware_protocol.md 5.4); the writer persists those changes in
the same transaction as the message itself.

A gap is *open* while the hub waits for its seqs, *dropped* (``dropped_at`` set) once the device
said it gave them up. Both count as missing data; only open gaps hold the watermark back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Gap:
    """Missing seqs ``from_seq..to_seq`` (inclusive) of one device stream; empty once closed."""

    from_seq: int
    to_seq: int
    detected_at: float
    id: int | None = None
    """Row id in the ``gaps`` table; None until inserted."""
    dirty: bool = True
    dropped_at: float | None = None
    """When the device declared these seqs given up (None: the hub still waits for them)."""

    @property
    def missing(self) -> int:
        return max(0, self.to_seq - self.from_seq + 1)

    @property
    def open(self) -> bool:
        return self.dropped_at is None and self.missing > 0

    def __contains__(self, seq: int) -> bool:
        return self.from_seq <= seq <= self.to_seq


@dataclass(slots=True)
class SeqTracker:
    """What the hub has dealt with of one stream (device, incarnation, boot): highest seq and the gaps.

    ``first_seq`` is 1 for every stream since contract v2 (a boot first seen at seq 10 opens the
    gap 1..9 at once); a stream stored by an older hub may still carry a higher one, meaning
    "nothing known below it".
    """

    first_seq: int
    max_seq: int
    gaps: list[Gap] = field(default_factory=list)
    dirty: bool = True

    @classmethod
    def empty(cls) -> SeqTracker:
        """The tracker of a stream the hub has nothing of yet."""
        return cls(first_seq=1, max_seq=0)

    def seen(self, seq: int) -> bool:
        """True when ``seq`` was already dealt with (a second copy is a duplicate)."""
        if not self.first_seq <= seq <= self.max_seq:
            return False
        return not any(seq in g for g in self.gaps)

    def observe(self, seq: int, now: float) -> list[Gap]:
        """Record a newly dealt-with ``seq``; returns the gaps this changed (new ones have ``id`` None).

        The writer handles the next seq (``max_seq + 1``: move the top, mark dirty) inline for each telemetry
        message (:meth:`hub.writer.BatchWriter._accept_telemetry`); keep the two alike."""
        changed: list[Gap] = []
        if seq == self.max_seq + 1:
            self.max_seq = seq
        elif seq > self.max_seq:
            gap = Gap(self.max_seq + 1, seq - 1, now)
            self.gaps.append(gap)
            changed.append(gap)
            self.max_seq = seq
        elif seq < self.first_seq:
            # an older hub's stream: a late arrival from before the first message it saw
            if seq + 1 <= self.first_seq - 1:
                gap = Gap(seq + 1, self.first_seq - 1, now)
                self.gaps.append(gap)
                changed.append(gap)
            self.first_seq = seq
        else:
            changed.extend(self._fill(seq))
        self.dirty = True
        return changed

    def drop_upto(self, upto: int, now: float) -> list[Gap]:
        """The device gave up every seq up to ``upto`` it still held: open gaps there become dropped."""
        changed: list[Gap] = []
        if self.first_seq > 1 and upto >= 1:  # an older hub's stream: make its unknown head a gap first
            head = Gap(1, self.first_seq - 1, now)
            self.gaps.append(head)
            changed.append(head)
            self.first_seq = 1
        for gap in list(self.gaps):
            if not gap.open or gap.from_seq > upto:
                continue
            if gap.to_seq > upto:  # split: the part above upto stays open
                tail = Gap(upto + 1, gap.to_seq, gap.detected_at)
                gap.to_seq = upto
                self.gaps.append(tail)
                changed.append(tail)
            gap.dropped_at = now
            gap.dirty = True
            if not any(c is gap for c in changed):
                changed.append(gap)
        if changed:
            self.gaps.sort(key=lambda g: g.from_seq)
            self.dirty = True
        return changed

    def _fill(self, seq: int) -> list[Gap]:
        for gap in self.gaps:
            if seq not in gap:
                continue
            gap.dirty = True
            if seq == gap.from_seq:
                gap.from_seq += 1
            elif seq == gap.to_seq:
                gap.to_seq -= 1
            else:  # inside: split in two
                tail = Gap(seq + 1, gap.to_seq, gap.detected_at, dropped_at=gap.dropped_at)
                gap.to_seq = seq - 1
                self.gaps.append(tail)
                self._drop_closed()
                return [gap, tail]
            closed = [gap]
            self._drop_closed()
            return closed
        return []  # a seq between first and max that no gap holds: nothing to update

    def _drop_closed(self) -> None:
        self.gaps = sorted((g for g in self.gaps if g.missing > 0), key=lambda g: g.from_seq)

    def _first_open(self) -> Gap | None:
        return min((g for g in self.gaps if g.open), key=lambda g: g.from_seq, default=None)

    @property
    def watermark(self) -> int:
        """Every seq from 1 up to this one is dealt with or dropped by the device (0: not even seq 1).

        Counted from seq 1: a boot first seen at seq 5 (seqs 1..4 lost on the way, e.g. by a
        broker restart before the hub ever heard of that boot) must not release 1..4 from the
        device's buffer. They are re-sent (or declared dropped), and the watermark moves then.
        """
        if self.first_seq > 1:
            return 0
        gap = self._first_open()
        return gap.from_seq - 1 if gap is not None else self.max_seq

    @property
    def hole(self) -> tuple[int, int]:
        """``(next, max)`` of the watermark: the lowest seq held above the first open gap and the
        highest one; ``(0, 0)`` when nothing is held above a missing seq."""
        if self.first_seq > 1:
            return self.first_seq, self.max_seq
        gap = self._first_open()
        if gap is None:
            return 0, 0
        return gap.to_seq + 1, self.max_seq

    @property
    def dropped(self) -> int:
        """Seqs the device declared given up that never arrived."""
        return sum(g.missing for g in self.gaps if g.dropped_at is not None)
