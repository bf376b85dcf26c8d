"""The writer's handle on fleet.db: the storage package's ingest, presence and registry stores on one
connection, speaking the hub's own types (:class:`~hub.gaps.SeqTracker`, :class:`~hub.gaps.Gap`).

One writer thread owns a :class:`HubStore` and wraps each batch in :meth:`HubStore.transaction`.
The SQL and the schema live in :mod:`hub.storage`; this module holds none.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hub.gaps import Gap, SeqTracker
from hub.storage import IngestStore, PresenceStore, PrincipalStore, open_database


class HubStore(IngestStore, PresenceStore):
    """The writer's stores on one connection; used by exactly one thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        conn = open_database(path)
        super().__init__(conn)
        self.principals = PrincipalStore(conn)

    def close(self) -> None:
        self.conn.close()

    def active_devices(self, device_ids: Iterable[str]) -> set[str]:
        """The ids among ``device_ids`` that are registered, active devices."""
        return self.principals.active_devices(device_ids)

    def load_stream(self, device_id: str, boot: int) -> SeqTracker | None:
        """The tracker of (device_id, boot) with its open gaps, or None when nothing was stored yet."""
        row = self.load_stream_row(device_id, boot)
        if row is None:
            return None
        gaps = [Gap(g.from_seq, g.to_seq, g.detected_at, id=g.id, dirty=False, dropped_at=g.dropped_at)
                for g in row.open_gaps]
        return SeqTracker(row.first_seq, row.max_seq, gaps, dirty=False)

    def save_stream(self, device_id: str, boot: int, tracker: SeqTracker) -> None:
        """Persist the tracker (its changed gaps are saved with :meth:`save_gap`)."""
        self.save_stream_row(device_id, boot, tracker.first_seq, tracker.max_seq)
        tracker.dirty = False

    def save_gap(self, device_id: str, boot: int, gap: Gap, now: float) -> None:
        """Insert a new gap or update a shrunk, split or closed one (a closed gap keeps its row with missing 0)."""
        gap.id = self.save_gap_row(device_id, boot, gap.id, gap.from_seq, gap.to_seq, gap.missing, gap.detected_at,
                                   now if gap.missing == 0 else None, gap.dropped_at)
        gap.dirty = False
