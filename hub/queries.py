"""Read-only library twins of the CLI listings: each opens the database read-only, queries, closes.

Scripts and tests call these; ``fleet readings``, ``fleet deadletters`` and
``fleet devices list`` only format what they return. A missing database is a
:class:`~hub.storage.StorageError` ("no database at PATH"), never a new empty file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.storage import queries, reading
from hub.storage.rollups import Period


def readings(db: str | Path, device_id: str, metric: str | None = None, since: float | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """Readings of one device, oldest first."""
    with reading(db) as conn:
        return queries.readings(conn, device_id, metric=metric, since=since, limit=limit)


def rollups(db: str | Path, device_id: str, every: Period, metric: str | None = None, since: float | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    """Per-minute or per-hour aggregates of one device (count, min, max, mean, last), oldest first.

    They are kept after retention has deleted the raw readings they cover.
    """
    with reading(db) as conn:
        return queries.rollups(conn, device_id, every, metric=metric, since=since, limit=limit)


def deadletters(db: str | Path, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Dead letters, newest first, payload as hex."""
    with reading(db) as conn:
        return queries.deadletters(conn, reason=reason, limit=limit)


def devices_with_presence(db: str | Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Registry rows (``Principal.public()``) joined with the hub's presence: state, last_seen, fw, boot, resets."""
    with reading(db) as conn:
        presence = queries.presence(conn)
    out = []
    for row in rows:
        p = presence.get(row["id"], {})
        out.append({**row, "state": p.get("state"), "last_seen": p.get("last_seen"), "fw": p.get("fw"),
                    "boot": p.get("boot"), "resets": p.get("incarnation") or 0})
    return out
