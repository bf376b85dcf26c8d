"""Run a :class:`~device_sim.fleet.Fleet` on its own event loop in a daemon thread.

The twin of :mod:`broker.background`, for callers that are not asyncio programs: tests,
benchmarks and tools that drive a simulated fleet from ordinary threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from device_sim.faults import FaultKind
from device_sim.fleet import Credentials, Fleet, SimSummary
from device_sim.ota import OtaPlan
from device_sim.settings import SimSettings


class BackgroundFleet:
    """A fleet serving from a background thread; ``start()`` returns once every device task exists."""

    def __init__(self, settings: SimSettings, creds: Credentials,
                 fault_plan: dict[int, frozenset[FaultKind]] | None = None, call_timeout: float = 30.0,
                 ota: OtaPlan | None = None) -> None:
        self.settings, self.creds, self.fault_plan, self.ota = settings, creds, fault_plan, ota
        self.call_timeout = call_timeout
        """Generous by default: a loaded 2-core machine can stall the loop for seconds."""
        self.fleet: Fleet | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started: Future[None] = Future()
        self._done: Future[SimSummary] = Future()
        self._thread = threading.Thread(target=self._run, name="fleet-sim", daemon=True)

    def start(self) -> BackgroundFleet:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.fleet = Fleet(self.settings, self.creds, self.fault_plan, self.ota)
            await self.fleet.start()
            self._started.set_result(None)
            await self._stop.wait()
            self._done.set_result(await self.fleet.stop())

        try:
            asyncio.run(main())
        except BaseException as exc:  # surface a crash to the calling thread
            for fut in (self._started, self._done):
                if not fut.done():
                    fut.set_exception(exc)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the fleet's loop and return its result (to read device state safely)."""
        assert self.loop is not None
        fut: Future[Any] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout=self.call_timeout)

    def summary(self) -> SimSummary:
        assert self.fleet is not None
        return self.call(self.fleet.summary)  # type: ignore[no-any-return]

    def abort_connections(self, ids: list[str]) -> int:
        """Drop these devices' sockets at once, without DISCONNECT; returns how many were open."""
        assert self.fleet is not None
        fleet = self.fleet

        def drop() -> int:
            n = 0
            for dev in ids:
                client = fleet.device(dev).client
                if client is not None and client.is_connected:
                    client.abort()
                    n += 1
            return n

        return int(self.call(drop))

    def stop(self) -> SimSummary:
        """Switch every device off cleanly and return the fleet's summary."""
        if self.loop is not None and self._stop is not None and not self._done.done():
            self.loop.call_soon_threadsafe(self._stop.set)
        summary = self._done.result(timeout=30)
        self._thread.join(10)
        return summary
