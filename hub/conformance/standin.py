"""The checker's stand-in for the hub's watermark, for the one device under test.

With the hub stopped, something must still answer the device as section 5.1 says (a watermark
after each message it deals with, and right after each birth), or the device's buffer would
only grow. The stand-in does that, and the scenarios can **hold** it (nothing is published: the
hub is "down", the broker holds what the device sends) and publish watermarks of their own.

It is deliberately simpler than the hub: it deals with every message it sees, and takes the seqs
below the first one it sees of a boot as dealt with (the retained watermark of the real hub, when
the broker has one for that boot, is the floor instead). One thread owns its state; the
scenarios call :meth:`hold`, :meth:`resume` and :meth:`covered` from theirs, under its lock.
"""

from __future__ import annotations

import threading
import time

from hub.conformance.link import DeviceLink, Seen
from protocol import Alert, MessageClass, Status, StatusState, Telemetry, Watermark


class StandInHub:
    """Publishes watermarks for one device unless held; start() after the hub is known to be absent."""

    def __init__(self, link: DeviceLink, boot: int, form: str, floor: int = 0) -> None:
        self.link = link
        self.boot = boot
        self.form = form
        self._floor = floor
        self._seen: set[int] = set()
        self._lock = threading.Lock()
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._published = 0
        self.last: Watermark | None = None

    # ------------------------------------------------------------ control (any thread)

    def start(self, from_index: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(from_index,), name="standin-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def hold(self) -> int:
        """Stop publishing (the hub is down); returns the seq the last watermark covered."""
        with self._lock:
            self._held = True
            return self.last.seq if self.last is not None else self._floor

    def resume(self) -> Watermark:
        """Publish again, starting with a watermark of everything seen so far; returns it."""
        with self._lock:
            self._held = False
            return self._publish_locked()

    def covered(self) -> int:
        with self._lock:
            return self._contiguous()

    # ------------------------------------------------------------ the thread

    def _run(self, index: int) -> None:
        while not self._stop.is_set():
            seen = self.link.wait_for(lambda s: True, index, 0.2)
            if seen is None:
                continue
            index = seen.index + 1
            self._take(seen)

    def _take(self, seen: Seen) -> None:
        if seen.retained or seen.mine:
            return
        msg = seen.message
        with self._lock:
            if isinstance(msg, Status) and msg.state is StatusState.ONLINE:
                if msg.boot != self.boot:
                    self.boot, self._floor, self._seen = msg.boot, 0, set()
                self.form = msg.enc
            elif isinstance(msg, (Telemetry, Alert)) and msg.boot == self.boot:
                if not self._seen and self._floor == 0:
                    self._floor = msg.seq - 1
                self._seen.add(msg.seq)
                self._floor = max(self._floor, msg.dropped)
            else:
                return
            if not self._held:
                self._publish_locked()

    def _contiguous(self) -> int:
        seq = self._floor
        while seq + 1 in self._seen:
            seq += 1
        return seq

    def _publish_locked(self) -> Watermark:
        seq = self._contiguous()
        above = [s for s in self._seen if s > seq + 1]
        nxt, top = (min(above), max(above)) if above else (0, 0)
        mark = Watermark(boot=self.boot, seq=seq, next=nxt, max=top, ts=int(time.time() * 1000))
        self.link.send(mark, self.form, retain=True)
        self.last = mark
        self._published += 1
        return mark
