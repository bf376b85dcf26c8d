"""The dashboard's data feed: one thread owns the read-only database connection and publishes snapshots.

Loading a snapshot reads SQLite (a few milliseconds for thousands of devices, longer on a busy
disk), so it never runs on the UI's event loop. The feed thread loads the fleet snapshot and, when
a device screen is open, that device's detail, then hands both to ``publish`` (the app posts them
as a message to its own loop). Snapshots are frozen dataclasses, so handing them across threads
is safe. :meth:`wake` asks for a load now (after a key press or a sent command).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from hub.overview import DeviceDetail, OverviewLoader, Snapshot


class DashboardFeed:
    """Loads a :class:`Snapshot` every ``refresh_s`` seconds (and the focused device's detail) in its own thread."""

    def __init__(self, db: str | Path, refresh_s: float,
                 publish: Callable[[Snapshot, DeviceDetail | None], None]) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self.publish = publish
        self.focus: str | None = None  # set by the UI thread; a plain attribute read is atomic
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DashboardFeed:
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Load again now instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread and close the connection (waits for a load in progress)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        loader = OverviewLoader(self.db)
        try:
            while not self._stop.is_set():
                focus = self.focus
                snapshot = loader.load()
                detail = loader.load_device(focus) if focus else None
                if self._stop.is_set():
                    break
                self.publish(snapshot, detail)
                self._wake.wait(self.refresh_s)
                self._wake.clear()
        finally:
            loader.close()
