"""Read-only library twins of the CLI listings: each opens the database, queries, closes.

Scripts and tests call these; ``fleet readings``, ``fleet deadletters`` and
``fleet devices list`` only format what they return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub import store


def _with_conn(db: str | Path, fn: Any, *args: Any, **kw: Any) -> Any:
    conn = store.connect(db)
    try:
        return fn(conn, *args, **kw)
    finally:
        conn.close()


def _hub_tables_exist(db: str | Path) -> bool:
    return Path(db).exists() and _with_conn(db, lambda c: store.has_table(c, "readings"))


def readings(db: str | Path, device_id: str, metric: str | None = None, since: float | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """Readings of one device, oldest first (empty when the hub never stored any)."""
    if not _hub_tables_exist(db):
        return []
    return _with_conn(db, store.query_readings, device_id, metric=metric, since=since, limit=limit)


def deadletters(db: str | Path, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Dead letters, newest first, payload as hex."""
    if not _hub_tables_exist(db):
        return []
    return _with_conn(db, store.query_deadletters, reason=reason, limit=limit)


def devices_with_presence(db: str | Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Registry rows (``Principal.public()``) joined with the hub's presence: state, last_seen, fw, boot, resets."""
    presence = _with_conn(db, store.query_presence) if Path(db).exists() else {}
    out = []
    for row in rows:
        p = presence.get(row["id"], {})
        out.append({**row, "state": p.get("state"), "last_seen": p.get("last_seen"), "fw": p.get("fw"),
                    "boot": p.get("boot"), "resets": p.get("incarnation") or 0})
    return out
