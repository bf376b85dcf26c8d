"""A thread that writes the hub's heartbeat (hub/status.py) once a second with live figures."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from hub.storage import StatusStore, open_database

log = logging.getLogger("fleet.hub.heartbeat")


class Heartbeat:
    """Writes ``stats()`` plus rates to the ``hub_status`` table every ``interval_s``."""

    def __init__(self, db: str, worker: str, broker: str, stats: Callable[[], dict[str, Any]],
                 connected: Callable[[], bool], interval_s: float = 1.0) -> None:
        self.db, self.worker, self.broker = db, worker, broker
        self.stats, self.connected, self.interval_s = stats, connected, interval_s
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-hub-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        conn = open_database(self.db)
        rows = StatusStore(conn)
        last: tuple[float, int, int] | None = None
        stats: dict[str, Any] = {}
        try:
            while True:
                now = time.time()
                stats = dict(self.stats())
                messages, readings = int(stats.get("messages", 0)), int(stats.get("readings", 0))
                if last is not None and now > last[0]:
                    stats["readings_in_per_s"] = (readings - last[2]) / (now - last[0])
                    stats["messages_per_s"] = (messages - last[1]) / (now - last[0])
                last = (now, messages, readings)
                try:
                    rows.write_heartbeat(self.worker, os.getpid(), self.started_at, self.broker, self.connected(),
                                         stats, now)
                except (sqlite3.Error, OSError) as exc:  # a locked or read-only db must not kill the hub; ingest reports it too
                    log.warning("heartbeat not written error=%r", exc)
                if self._stop.wait(self.interval_s):
                    break
        finally:
            # a clean stop leaves a last row marked stopped: readers say "hub down" at once, not after a
            # timeout, and `fleet status` can still say that a hub ran here and when it stopped
            with contextlib.suppress(sqlite3.Error, OSError):
                rows.write_heartbeat(self.worker, os.getpid(), self.started_at, self.broker, False,
                                     {**stats, "stopped": True}, time.time())
            conn.close()
