"""Alarms for operators: the library twins of ``fleet alarms``, ``fleet alarms ack`` and ``fleet alarms show``.

The alarm engine (:mod:`hub.alarm_engine`, run by :mod:`hub.alarm_service` inside the hub) raises,
re-opens and clears alarms; operators list them and acknowledge them from any process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hub.storage import open_database, reading
from hub.storage.alarms import AlarmStore
from protocol.errors import FleetError


class UnknownAlarm(FleetError):
    """No alarm of that id."""


def list_alarms(db: str | Path, active: bool = False, device_id: str | None = None,
                limit: int = 1000) -> list[dict[str, Any]]:
    """Alarms, newest first; ``active``: only those not cleared (active or acknowledged)."""
    with reading(db) as conn:
        return [a.public() for a in AlarmStore(conn).alarms(active=active, device_id=device_id, limit=limit)]


def show_alarm(db: str | Path, alarm_id: int) -> dict[str, Any]:
    """One alarm with its history (``history``: its transitions, oldest first)."""
    with reading(db) as conn:
        store = AlarmStore(conn)
        row = store.get(alarm_id)
        if row is None:
            raise UnknownAlarm(f"no alarm {alarm_id}")
        return {**row.public(), "history": store.history(alarm_id)}


def ack_alarm(db: str | Path, alarm_id: int, operator: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Acknowledge alarm ``alarm_id`` (a second acknowledgement changes nothing); returns the alarm."""
    conn = open_database(db)
    try:
        row = AlarmStore(conn).acknowledge(alarm_id, operator, time.time() if now is None else now)
    finally:
        conn.close()
    if row is None:
        raise UnknownAlarm(f"no alarm {alarm_id}")
    return row.public()


def open_alarm_counts(db: str | Path) -> dict[str, int]:
    """Open alarms per severity (active and acknowledged together), for the dashboard."""
    with reading(db) as conn:
        counts: dict[str, int] = {}
        for (_, severity), n in AlarmStore(conn).open_counts().items():
            counts[severity] = counts.get(severity, 0) + n
        return counts
