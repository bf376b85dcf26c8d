"""The hub's heartbeat: one row per hub worker (``hub_status``), rewritten about once a second.

The dashboard and ``fleet status`` read it to tell whether the hub is alive and how it
keeps up (counters, queue depth, ingest lag) without talking to the hub process. The rows
are kept by :class:`hub.storage.StatusStore`; this module holds what "alive" means.
"""

from __future__ import annotations

import time

from hub.storage import Heartbeat

ALIVE_WITHIN_S = 5.0
"""A hub whose heartbeat is older than this is considered down."""


def alive(heartbeat: Heartbeat, now: float | None = None) -> bool:
    """True when the heartbeat is recent enough and not the last one of a clean stop."""
    if heartbeat.stats.get("stopped"):
        return False
    return (time.time() if now is None else now) - heartbeat.updated_at <= ALIVE_WITHIN_S
