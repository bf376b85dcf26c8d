"""Sequence tracking per device and boot: gaps in ``seq`` and the contiguous watermark.

Pure logic, no SQL: :class:`SeqTracker` says which gaps open, shrink, split or close when a
new (not duplicate) ``seq`` arrives; the writer persists those changes in the same
transaction as the message itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Gap:
    """Missing seqs ``from_seq..to_seq`` (inclusive) of one device and boot; empty once closed."""

    from_seq: int
    to_seq: int
    detected_at: float
    id: int | None = None
    """Row id in the ``gaps`` table; None until inserted."""
    dirty: bool = True

    @property
    def missing(self) -> int:
        return max(0, self.to_seq - self.from_seq + 1)

    def __contains__(self, seq: int) -> bool:
        return self.from_seq <= seq <= self.to_seq


@dataclass(slots=True)
class SeqTracker:
    """What the hub has seen of one (device, boot): first and highest seq, and the open gaps."""

    first_seq: int
    max_seq: int
    gaps: list[Gap] = field(default_factory=list)
    dirty: bool = True

    @classmethod
    def start(cls, seq: int) -> SeqTracker:
        """The tracker of a boot whose first message seen has ``seq`` (earlier ones are not counted missing)."""
        return cls(first_seq=seq, max_seq=seq)

    def observe(self, seq: int, now: float) -> list[Gap]:
        """Record a newly stored ``seq``; returns the gaps this changed (new ones have ``id`` None)."""
        changed: list[Gap] = []
        if seq == self.max_seq + 1:
            self.max_seq = seq
        elif seq > self.max_seq:
            gap = Gap(self.max_seq + 1, seq - 1, now)
            self.gaps.append(gap)
            changed.append(gap)
            self.max_seq = seq
        elif seq < self.first_seq:
            # a late arrival from before the first message seen: the seqs between are missing
            if seq + 1 <= self.first_seq - 1:
                gap = Gap(seq + 1, self.first_seq - 1, now)
                self.gaps.append(gap)
                changed.append(gap)
            self.first_seq = seq
        else:
            changed.extend(self._fill(seq))
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
                tail = Gap(seq + 1, gap.to_seq, gap.detected_at)
                gap.to_seq = seq - 1
                self.gaps.append(tail)
                self._drop_closed()
                return [gap, tail]
            closed = [gap]
            self._drop_closed()
            return closed
        return []  # a seq between first and max that no open gap holds: nothing to update

    def _drop_closed(self) -> None:
        self.gaps = [g for g in self.gaps if g.missing > 0]

    @property
    def watermark(self) -> int:
        """Every seq from 1 up to this one is stored (0: not even seq 1).

        Counted from seq 1, not from ``first_seq``: a boot first seen at seq 5 (seqs 1..4 lost
        on the way, e.g. by a broker restart before the hub ever heard of that boot) must not
        release 1..4 from the device's buffer. They are re-sent, and the watermark moves once
        they are stored.
        """
        if self.first_seq > 1:
            return 0
        if self.gaps:
            return min(g.from_seq for g in self.gaps) - 1
        return self.max_seq
