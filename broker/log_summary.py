"""Bounded logging for events a client can trigger at will (denials, refused logins, throttling).

A device that repeats a denied SUBSCRIBE in a loop must not be able to write the broker's log
full (47 MB in 10 s before this module). :class:`LogSummary` logs the first event of a kind
for a key (usually the username) in each interval, counts the rest, and logs one summary line
with the count when the interval is over. The number of keys tracked is bounded too: beyond
``max_keys`` further keys share one ``key=*`` entry, so rotating usernames or topics does not
grow memory or output. Every text a client chose (topics, usernames) is passed through
:func:`clip` first: control characters escaped, at most ``MAX_TEXT`` characters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol.text import inert

MAX_TEXT = 120
"""Longest client-chosen text (topic, username, client id) written into one log line."""

OVERFLOW_KEY = "*"


def clip(text: object, limit: int = MAX_TEXT) -> str:
    """``text`` made inert (control characters escaped) and cut to ``limit`` characters."""
    if text is None:
        return "None"
    s = inert(text)
    return s if len(s) <= limit else f"{s[:limit]}...({len(s)} chars)"


@dataclass(slots=True)
class _Window:
    started: float
    suppressed: int = 0


class LogSummary:
    """Log an event at most once per ``interval_s`` per (kind, key); summarize the repeats.

    ``clock`` is injectable for tests. :meth:`flush` writes the summaries of windows that ended;
    the broker calls it periodically so a burst that stops is still reported.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, max_keys: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self.events = 0
        self.suppressed = 0

    def event(self, kind: str, key: str, msg: str, *args: object, level: int = logging.WARNING) -> bool:
        """Record one event; log ``msg % args`` when it is the first of its window. True when logged."""
        self.events += 1
        now = self.clock()
        ident = (kind, key)
        window = self._windows.get(ident)
        if window is None and len(self._windows) >= self.max_keys:
            ident = (kind, OVERFLOW_KEY)
            window = self._windows.get(ident)
        if window is not None and now - window.started < self.interval_s:
            window.suppressed += 1
            self.suppressed += 1
            return False
        if window is not None:
            self._summarize(ident, window, now)
        self._windows[ident] = _Window(now)
        self.logger.log(level, msg, *args)
        return True

    def flush(self) -> None:
        """Write the summary of every window that has ended, and forget it."""
        now = self.clock()
        for ident, window in list(self._windows.items()):
            if now - window.started >= self.interval_s:
                self._summarize(ident, window, now)
                del self._windows[ident]

    def _summarize(self, ident: tuple[str, str], window: _Window, now: float) -> None:
        if window.suppressed:
            kind, key = ident
            self.logger.warning("%s repeated key=%s count=%d over_s=%.0f", kind, key, window.suppressed,
                                now - window.started)
