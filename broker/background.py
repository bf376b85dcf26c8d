"""Run an :class:`~broker.server.EmbeddedBroker` on its own event loop in a daemon thread.

For callers that are not asyncio programs themselves: tests, benchmarks, ``fleet up``.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from broker.config import BrokerSettings
from broker.server import EmbeddedBroker


class BackgroundBroker:
    """An embedded broker serving from a background thread; ``start()`` returns once it listens."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready: Future[int] = Future()
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 15.0) -> BackgroundBroker:
        self._thread = threading.Thread(target=self._run, name="fleet-broker", daemon=True)
        self._thread.start()
        self._ready.result(timeout=timeout)
        return self

    @property
    def port(self) -> int:
        return self._ready.result()

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self.broker = EmbeddedBroker(self.settings)
                await self.broker.start()
            except BaseException as exc:
                self._ready.set_exception(exc)
                return
            self._ready.set_result(self.broker.port)
            await self._stop.wait()
            await self.broker.stop()

        asyncio.run(main())

    def call(self, coro_factory, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        """Run ``coro_factory()`` on the broker's loop and return its result (for tests and tools)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro_factory(), self.loop).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self.loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
