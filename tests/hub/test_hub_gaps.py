"""The seq tracker on its own: gaps open, shrink, split and close; the watermark follows."""

from __future__ import annotations

from hub.gaps import SeqTracker


def spans(t: SeqTracker) -> list[tuple[int, int]]:
    return sorted((g.from_seq, g.to_seq) for g in t.gaps)


def test_gap_opens_splits_and_closes():
    t = SeqTracker.start(1)
    t.observe(2, 0.0)
    assert t.watermark == 2
    (gap,) = t.observe(10, 0.0)
    assert (gap.from_seq, gap.to_seq, gap.missing, gap.id) == (3, 9, 7, None)
    assert t.watermark == 2
    t.observe(3, 0.0)
    assert spans(t) == [(4, 9)] and t.watermark == 3
    changed = t.observe(6, 0.0)
    assert len(changed) == 2 and spans(t) == [(4, 5), (7, 9)]
    for s in (9, 8, 7, 5):
        t.observe(s, 0.0)
    assert spans(t) == [(4, 4)] and t.watermark == 3
    (closed,) = t.observe(4, 0.0)
    assert closed.missing == 0 and t.gaps == [] and t.watermark == 10


def test_late_arrival_before_the_first_seen():
    t = SeqTracker.start(5)
    (gap,) = t.observe(2, 0.0)
    assert (gap.from_seq, gap.to_seq) == (3, 4) and t.first_seq == 2 and t.watermark == 0  # seq 1 is not stored
    t.observe(1, 0.0)
    assert spans(t) == [(3, 4)] and t.watermark == 2
