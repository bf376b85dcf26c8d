"""Per-connection guards: keep-alive enforcement (AMQTT_NOTES.md #2) and a hard packet-size cap (#11).

amqtt 0.12.1 never enforces keep-alive: ``mqtt/protocol/broker_handler.py``
``BrokerProtocolHandler.handle_read_timeout`` is ``pass``, so a client that goes silent with its
socket open stays "connected" forever and its last will never fires. The read timeout it does set
(``mqtt/protocol/handler.py`` ``_reader_loop``, ``wait_for(... timeout=keep_alive)``) only covers
the first byte of each packet, and cancelling that read can desynchronise the stream.

Here every connection's reader is wrapped in an :class:`ActivityReader` that records when bytes
last arrived, amqtt's own read timeout is switched off (the session's ``keep_alive`` is set to 0
and the client's value kept as ``fleet_keepalive``), and one :class:`KeepAliveWatchdog` task per
broker closes any connection silent for longer than ``keepalive x keepalive_grace`` (1.5 by
default, as MQTT 3.1.1 section 3.1.2.10 says). Closing goes through
``handler.handle_connection_closed()``, the same path as a dropped socket, so the broker publishes
the client's last will.

amqtt also has no packet size limit (``contexts.py`` has no such setting): a PUBLISH of 256 MB is
read into memory. :class:`ActivityReader` refuses any single read larger than
``max_packet_bytes`` and the connection is closed. Payloads above ``max_payload_bytes`` but below
that cap are dropped by the router instead (see :mod:`broker.routing`), so a device that sends one
oversized message keeps its connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from amqtt.adapters import ReaderAdapter
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

log = logging.getLogger("fleet.broker.connection")


class PacketTooLargeError(Exception):
    """A client announced a packet larger than ``max_packet_bytes``; its connection is closed."""


class ActivityReader(ReaderAdapter):
    """Wraps amqtt's reader: remembers when data last arrived and caps the size of any one read."""

    def __init__(self, inner: ReaderAdapter, max_read: int) -> None:
        self._inner = inner
        self._max_read = max_read
        self.last_read = time.monotonic()

    async def read(self, n: int = -1) -> bytes:
        if n > self._max_read:
            raise PacketTooLargeError(f"read of {n} bytes exceeds max_packet_bytes={self._max_read}")
        data = await self._inner.read(n)
        self.last_read = time.monotonic()
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()


def silent_for(handler: BrokerProtocolHandler, now: float) -> float | None:
    """Seconds since ``handler``'s client last sent anything (None when the reader is not ours)."""
    reader = handler.reader
    if isinstance(reader, ActivityReader):
        return now - reader.last_read
    return None


class KeepAliveWatchdog:
    """Closes connections whose client has been silent for longer than keepalive x grace.

    ``sessions`` returns the broker's ``(session, handler)`` pairs; the sweep runs every
    ``interval`` seconds, so a silent client is closed between ``keepalive x grace`` and that
    plus ``interval``.
    """

    def __init__(self, sessions: Callable[[], Iterable[tuple[Session, BrokerProtocolHandler]]],
                 grace: float, interval: float = 1.0) -> None:
        # one sweep walks every session: at 0.25 s it was 5.5 % of the broker's CPU with 1,000
        # devices connected (py-spy, bench/README.md); keep-alives are tens of seconds, 1 s is precise enough
        self._sessions = sessions
        self.grace = grace
        self.interval = interval
        self.expired = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sweeping on the running loop."""
        self._task = asyncio.create_task(self._run(), name="fleet-keepalive")

    async def stop(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sweep()

    async def sweep(self) -> None:
        """Close every connection that has overstayed its keep-alive."""
        now = time.monotonic()
        for session, handler in list(self._sessions()):
            keepalive: float = getattr(session, "fleet_keepalive", 0)
            if keepalive <= 0 or getattr(handler, "fleet_expired", False):
                continue
            if session.transitions.state != "connected":
                continue
            silent = silent_for(handler, now)
            if silent is None or silent <= keepalive * self.grace:
                continue
            handler.fleet_expired = True  # type: ignore[attr-defined]
            self.expired += 1
            log.warning("keepalive expired client_id=%s keepalive_s=%s silent_s=%.2f",
                        session.client_id, keepalive, silent)
            # the same path as a dropped socket: the message loop publishes the will and cleans up
            await handler.handle_connection_closed()


def mark_keepalive(session: Session) -> None:
    """Move the client's keep-alive out of amqtt's hands into ``fleet_keepalive`` (see module doc)."""
    any_session: Any = session
    any_session.fleet_keepalive = session.keep_alive
    session.keep_alive = 0
