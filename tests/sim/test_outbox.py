"""The device's store-and-forward buffer on its own (firmware_protocol.md 5.2 to 5.4).

Pure logic: watermarks cover, a full buffer drops its oldest message and declares it, re-sends
happen only by rules R1 (reconnect), R2 (a hole the hub reports) and R3 (rebirth), and R2 gives
a message up after three sends.
"""

from __future__ import annotations

from device_sim.outbox import Entry, Outbox
from protocol.models import Watermark


def fill(box: Outbox, first: int, last: int, sent: bool = True) -> list[Entry]:
    entries = []
    for seq in range(first, last + 1):
        entry = Entry(box.boot, seq, b"x", "d/x/t", 0.0)
        box.add(entry)
        if sent:
            box.mark_sent(entry)
        entries.append(entry)
    return entries


def seqs(box: Outbox) -> list[int]:
    return [e.seq for e in box.entries]


def test_a_watermark_covers_its_boot_only():
    box = Outbox(capacity=10, boot=7)
    fill(box, 1, 5)
    assert box.on_watermark(Watermark(boot=6, seq=5)).covered == 0
    out = box.on_watermark(Watermark(boot=7, seq=3))
    assert out.covered == 3 and seqs(box) == [4, 5] and not out.resend
    assert box.dropped_field() == 0  # the normal case: nothing to declare, no extra bytes


def test_a_full_buffer_drops_the_oldest_and_declares_it_until_the_hub_caught_up():
    box = Outbox(capacity=3, boot=1)
    fill(box, 1, 3)
    victims = box.add(Entry(1, 4, b"x", "d/x/t", 0.0))
    assert [v.seq for v in victims] == [1] and seqs(box) == [2, 3, 4]
    assert box.released == 1 and box.dropped_field() == 1
    box.on_watermark(Watermark(boot=1, seq=1))  # the hub has closed seq 1 as dropped
    assert box.dropped_field() == 0


def test_seqs_that_never_entered_the_buffer_are_declared_once_the_watermark_reaches_them():
    box = Outbox(capacity=10, boot=1)
    fill(box, 1, 2)
    box.took_seq(3)  # taken but never sent (a message refused before sending)
    fill(box, 4, 5)
    box.on_watermark(Watermark(boot=1, seq=2, next=4, max=5))
    assert box.released == 3 and box.dropped_field() == 3


def test_a_hole_is_re_sent_once_per_proof_that_the_last_send_was_lost():
    box = Outbox(capacity=10, boot=1)
    fill(box, 1, 6)
    out = box.on_watermark(Watermark(boot=1, seq=1, next=4, max=6))
    assert [e.seq for e in out.resend] == [2, 3] and seqs(box) == [2, 3, 4, 5, 6]
    for e in out.resend:
        box.mark_sent(e)
    # the same hole again, but the hub has nothing newer than the re-send: the copies may be on their way
    assert box.on_watermark(Watermark(boot=1, seq=1, next=4, max=6)).resend == []
    fill(box, 7, 7)
    out = box.on_watermark(Watermark(boot=1, seq=1, next=4, max=7))
    assert [e.seq for e in out.resend] == [2, 3]


def test_after_three_proven_losses_of_its_re_sends_the_oldest_message_is_given_up():
    box = Outbox(capacity=10, boot=1, max_resends=3)
    fill(box, 1, 3)
    top = 3
    for _ in range(3):
        top += 1
        fill(box, top, top)
        out = box.on_watermark(Watermark(boot=1, seq=0, next=2, max=top))
        assert [e.seq for e in out.resend] == [1]
        box.mark_sent(out.resend[0])
    top += 1
    fill(box, top, top)
    out = box.on_watermark(Watermark(boot=1, seq=0, next=2, max=top))
    assert out.resend == [] and [e.seq for e in out.abandoned] == [1]
    assert box.on_reconnect(session_present=False)[0].seq == 2  # reconnect re-sends never count towards the bound
    assert seqs(box)[0] == 2 and box.dropped_field() == 1


def test_reconnect_re_sends_only_what_the_broker_may_have_lost():
    box = Outbox(capacity=10, boot=1)
    entries = fill(box, 1, 4)
    box.on_puback(entries[0])
    box.on_puback(entries[1])
    assert [e.seq for e in box.on_reconnect(session_present=True)] == [3, 4]
    assert [e.seq for e in box.on_reconnect(session_present=False)] == [1, 2, 3, 4]
    assert [e.seq for e in box.everything()] == [1, 2, 3, 4]


def test_a_new_boot_restarts_the_stream_and_keeps_older_messages_until_released():
    box = Outbox(capacity=10, boot=1)
    old = fill(box, 1, 2)
    box.on_puback(old[0])
    box.new_boot(2)
    fill(box, 1, 1)
    assert box.released == 0
    out = box.on_watermark(Watermark(boot=2, seq=1))
    assert out.covered == 2 and [(e.boot, e.seq) for e in box.entries] == [(1, 2)]
