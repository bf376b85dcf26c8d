"""The whole system in one process, for ``fleet up``: embedded broker, hub, and a simulated fleet.

The broker and the simulator share one asyncio loop in a background thread; the hub runs
its own threads; the caller's thread is free for the dashboard. :meth:`Stack.stop` shuts
down in dependency order: devices say goodbye, the hub commits and acknowledges its last
batch, then the broker closes its port.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from broker.config import BrokerSettings
from broker.server import EmbeddedBroker
from device_sim.fleet import Fleet, SimSummary, device_id, provision
from device_sim.settings import SimSettings
from hub.config import HubSettings
from hub.service import Hub
from cli.errors import CliError, ExitCode

log = logging.getLogger("fleet.up")


class Stack:
    """Start and stop broker, hub and simulator together."""

    def __init__(self, db: Path, host: str = "127.0.0.1", port: int = 1883, devices: int = 50, rate: float = 0.5,
                 seed: int = 1) -> None:
        self.db = db
        self.broker_settings = BrokerSettings(host=host, port=port, db=db)
        self.devices = devices
        self.rate = rate
        self.seed = seed
        self.hub: Hub | None = None
        self.fleet: Fleet | None = None
        self.broker: EmbeddedBroker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def broker_url(self) -> str:
        port = self.broker.port if self.broker else self.broker_settings.port
        return f"mqtt://{self.broker_settings.host}:{port}"

    def provision(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Create the simulated devices' credentials on first start (reused afterwards)."""
        if self.devices:
            provision(self.db, [device_id("sim", i + 1) for i in range(self.devices)], progress=progress)

    def start(self, timeout: float = 30.0) -> None:
        """Broker, then hub, then devices; raises FleetError naming the part that failed."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run_loop, args=(ready,), name="fleet-up-loop", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout)
        except OSError as exc:
            self.stop()
            raise CliError(f"broker could not listen on {self.broker_settings.host}:{self.broker_settings.port}: "
                           f"{exc.strerror or exc}", ExitCode.CANNOT_LISTEN,
                           "is another broker running? try --port") from None
        self.hub = Hub(HubSettings(db=self.db, broker=self.broker_url))
        self.hub.start(timeout)
        if self.devices:
            self._call(self._start_fleet, timeout)

    def _run_loop(self, ready: Future[None]) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._loop_stop = asyncio.Event()
            try:
                self.broker = EmbeddedBroker(self.broker_settings)
                await self.broker.start()
            except BaseException as exc:
                cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
                ready.set_exception(cause)
                return
            ready.set_result(None)
            await self._loop_stop.wait()
            await self.broker.stop()

        asyncio.run(main())

    def _call(self, coro_factory: Callable[[], object], timeout: float) -> object:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro_factory(), self._loop).result(timeout)  # type: ignore[arg-type]

    async def _start_fleet(self) -> None:
        assert self.broker is not None
        from device_sim.fleet import Credentials, credentials_path

        settings = SimSettings(devices=self.devices, port=self.broker.port, rate=self.rate, seed=self.seed,
                               heartbeat_s=30, alerts=True)
        self.fleet = Fleet(settings, Credentials(credentials_path(self.db)))
        await self.fleet.start()

    def sim_summary(self) -> SimSummary | None:
        return self.fleet.summary() if self.fleet else None

    def stop(self) -> None:
        """Devices, then hub (last batch committed), then broker; safe to call twice."""
        if self.fleet is not None and self._loop is not None:
            try:
                self._call(self.fleet.stop, 30)
            except Exception as exc:  # shutting down: report, and go on stopping the rest
                log.warning("simulator stop failed error=%r", exc)
            self.fleet = None
        if self.hub is not None:
            self.hub.stop()
            self.hub = None
        if self._loop is not None and self._loop_stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop_stop.set)
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None
