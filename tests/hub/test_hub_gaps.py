"""The seq tracker on its own: gaps open, shrink, split, close or are dropped; the watermark follows."""

from __future__ import annotations

from hub.gaps import SeqTracker


def spans(t: SeqTracker, dropped: bool | None = None) -> list[tuple[int, int]]:
    return sorted((g.from_seq, g.to_seq) for g in t.gaps if dropped is None or (g.dropped_at is not None) == dropped)


def started(seq: int) -> SeqTracker:
    t = SeqTracker.empty()
    t.observe(seq, 0.0)
    return t


def test_gap_opens_splits_and_closes():
    t = started(1)
    t.observe(2, 0.0)
    assert t.watermark == 2 and t.hole == (0, 0)
    (gap,) = t.observe(10, 0.0)
    assert (gap.from_seq, gap.to_seq, gap.missing, gap.id) == (3, 9, 7, None)
    assert t.watermark == 2 and t.hole == (10, 10)
    t.observe(3, 0.0)
    assert spans(t) == [(4, 9)] and t.watermark == 3
    changed = t.observe(6, 0.0)
    assert len(changed) == 2 and spans(t) == [(4, 5), (7, 9)]
    assert t.hole == (6, 10)  # the device re-sends 4 and 5 first
    for s in (9, 8, 7, 5):
        t.observe(s, 0.0)
    assert spans(t) == [(4, 4)] and t.watermark == 3
    (closed,) = t.observe(4, 0.0)
    assert closed.missing == 0 and t.gaps == [] and t.watermark == 10 and t.hole == (0, 0)


def test_a_boot_first_seen_at_seq_10_records_the_leading_gap():
    t = started(10)
    assert spans(t) == [(1, 9)] and t.watermark == 0 and t.hole == (10, 10)
    t.observe(1, 0.0)
    assert spans(t) == [(2, 9)] and t.watermark == 1


def test_seqs_the_device_dropped_no_longer_hold_the_watermark():
    t = started(1)
    t.observe(5, 0.0)
    t.observe(9, 0.0)
    assert spans(t) == [(2, 4), (6, 8)] and t.watermark == 1
    changed = t.drop_upto(7, 1.0)
    assert spans(t, dropped=True) == [(2, 4), (6, 7)] and spans(t, dropped=False) == [(8, 8)]
    assert len(changed) == 3 and t.watermark == 7 and t.hole == (9, 9) and t.dropped == 5
    assert t.drop_upto(7, 2.0) == []  # idempotent: a re-sent message repeats its dropped field
    t.observe(3, 3.0)  # a copy that was still on its way is stored after all
    assert spans(t, dropped=True) == [(2, 2), (4, 4), (6, 7)] and t.dropped == 4 and t.seen(3)
    t.drop_upto(8, 4.0)
    assert t.watermark == 9 and t.hole == (0, 0) and not t.seen(8) and t.seen(9)


def test_seen_tells_a_duplicate_from_a_late_arrival():
    t = started(1)
    t.observe(4, 0.0)
    assert t.seen(1) and t.seen(4) and not t.seen(2) and not t.seen(5) and not t.seen(0)


def test_an_older_hub_stream_without_its_head_still_works():
    t = SeqTracker(first_seq=5, max_seq=5)  # as an older hub stored a boot first seen at seq 5
    (gap,) = t.observe(2, 0.0)
    assert (gap.from_seq, gap.to_seq) == (3, 4) and t.first_seq == 2 and t.watermark == 0  # seq 1 is not stored
    assert t.hole == (2, 5)
    t.observe(1, 0.0)
    assert spans(t) == [(3, 4)] and t.watermark == 2
    legacy = SeqTracker(first_seq=5, max_seq=6)
    legacy.drop_upto(4, 0.0)
    assert legacy.watermark == 6 and spans(legacy, dropped=True) == [(1, 4)]
