"""The exactly-once key as runs of sequence numbers: one ``message_runs`` row per run of a (device, boot).

A device's seqs arrive mostly contiguous, so the key of message n+1 usually extends the run that
holds message n instead of adding a row (24 bytes a message before, about 5 now). Exactly-once
stays exact: a seq inside any run of its (device, boot) is a duplicate; a late message that fills
a hole extends the run before it and may merge it with the run after it.

Each message's own metadata is kept exactly, packed in 4 bytes per message after a run's first:
its receive time as milliseconds after the run's first message (unsigned 16 bits, so a run spans
at most 65.5 s of hub time) and its clock lag (receive time minus the device's ``ts``) as an
offset from the first message's lag (16 bits, biased by 2**15). A message joins a run only when
it has the run's kind and skew flag and both offsets fit; otherwise it starts a new run. Readers
decode the offsets with :func:`message_meta` (or :func:`sql_message_meta` in SQL).

No SQL here except the two expressions of :func:`sql_message_meta`; the table belongs to
:mod:`hub.storage.schema`, its statements to :mod:`hub.storage.ingest`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

MAX_MESSAGES = 64
"""Messages per run row at most (its offsets blob stays under 256 bytes, rewritten cheaply)."""
_SPAN = 1 << 16
_BIAS = 1 << 15
_OFFSETS = struct.Struct(">HH")
"""One message's entry: receive-time offset and biased lag offset, big-endian."""

CLEAN, NEW, DIRTY = 0, 1, 2
"""Where a run stands against the database: as stored, not stored yet, changed since stored."""


@dataclass(slots=True, eq=False)
class Run:
    """One run of contiguous seqs of (device, boot): first and last seq, and each message's metadata."""

    device: int
    boot: int
    first: int
    last: int
    kind: int
    skewed: int
    received: int
    """The first message's receive time, ms since the epoch."""
    lag: int
    """The first message's receive time minus its device time, ms."""
    offsets: bytearray = field(default_factory=bytearray)
    state: int = NEW

    def extend(self, kind: int, skewed: int, received: int, lag: int) -> bool:
        """Add message ``last + 1`` when it fits; True when it did."""
        dr = received - self.received
        dl = lag - self.lag + _BIAS
        if (kind != self.kind or skewed != self.skewed or not 0 <= dr < _SPAN or not 0 <= dl < _SPAN
                or self.last - self.first + 1 >= MAX_MESSAGES):
            return False
        self.offsets += _OFFSETS.pack(dr, dl)
        self.last += 1
        if self.state == CLEAN:
            self.state = DIRTY
        return True

    def meta(self, seq: int) -> tuple[int, int]:
        """(receive time ms, lag ms) of message ``seq`` of this run."""
        return message_meta(self.received, self.lag, self.first, self.offsets, seq)

    def messages(self) -> Iterator[tuple[int, int, int, int, int]]:
        """(seq, kind, skewed, received ms, lag ms) of each message of the run."""
        for seq in range(self.first, self.last + 1):
            received, lag = self.meta(seq)
            yield seq, self.kind, self.skewed, received, lag

    def absorb(self, other: Run) -> bool:
        """Append ``other`` (which starts at ``last + 1``) when every message of it fits; True when it did."""
        if other.first != self.last + 1 or other.last - self.first + 1 > MAX_MESSAGES:
            return False
        size, last, state = len(self.offsets), self.last, self.state
        for _seq, kind, skewed, received, lag in other.messages():
            if not self.extend(kind, skewed, received, lag):  # all or nothing: undo what went in
                del self.offsets[size:]
                self.last, self.state = last, state
                return False
        return True

    def row(self) -> tuple[int, int, int, int, int, int, int, int, bytes]:
        """The ``message_runs`` row: (device, boot, first_seq, last_seq, kind, skewed, received_at, lag_ms, offsets)."""
        return (self.device, self.boot, self.first, self.last, self.kind, self.skewed, self.received, self.lag,
                bytes(self.offsets))

    @classmethod
    def from_row(cls, row: tuple[int, int, int, int, int, int, int, int, bytes]) -> Run:
        """A run as stored (state CLEAN)."""
        device, boot, first, last, kind, skewed, received, lag, offsets = row
        return cls(device, boot, first, last, kind, skewed, received, lag, bytearray(offsets or b""), CLEAN)


def message_meta(received: int, lag: int, first: int, offsets: bytes, seq: int) -> tuple[int, int]:
    """(receive time ms, lag ms) of message ``seq`` of a run stored as ``received``, ``lag``, ``first``, ``offsets``."""
    if seq == first:
        return received, lag
    i = 4 * (seq - first - 1)
    return received + (offsets[i] << 8 | offsets[i + 1]), lag + (offsets[i + 2] << 8 | offsets[i + 3]) - _BIAS


def build_runs(device: int, boot: int, messages: Iterable[tuple[int, int, int, int, int]]) -> list[Run]:
    """Runs of one (device, boot) from its messages (seq, kind, skewed, received ms, lag ms) in seq order."""
    runs: list[Run] = []
    tail: Run | None = None
    for seq, kind, skewed, received, lag in messages:
        if tail is None or seq != tail.last + 1 or not tail.extend(kind, skewed, received, lag):
            tail = Run(device, boot, seq, seq, kind, skewed, received, lag)
            runs.append(tail)
    return runs


_BYTES = "X'" + "".join(f"{i:02x}" for i in range(256)) + "'"


def _byte(col: str, pos: str) -> str:
    # the value of one byte of a blob in plain SQL: its place in the blob of all 256 byte values
    return f"(instr({_BYTES}, substr({col}, {pos}, 1)) - 1)"


def sql_message_meta(run: str, seq: str) -> tuple[str, str]:
    """SQL expressions of (receive time ms, lag ms) of message ``seq`` in run alias ``run`` (for the views)."""
    at = f"(4 * ({seq} - {run}.first_seq) - 3)"
    offsets = f"{run}.offsets"
    received = (f"({run}.received_at + CASE WHEN {seq} = {run}.first_seq THEN 0 ELSE"
                f" {_byte(offsets, at)} * 256 + {_byte(offsets, at + ' + 1')} END)")
    lag = (f"({run}.lag_ms + CASE WHEN {seq} = {run}.first_seq THEN 0 ELSE"
           f" {_byte(offsets, at + ' + 2')} * 256 + {_byte(offsets, at + ' + 3')} - {_BIAS} END)")
    return received, lag
