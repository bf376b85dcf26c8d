"""Harness for the simulator tests: a fleet on its own event loop thread, and a hub-role subscriber."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest



from broker.registry import Registry, Role
from device_sim.faults import FaultKind
from device_sim.fleet import Credentials, Fleet, SimSummary, device_id, provision
from device_sim.settings import SimSettings
from protocol import Command, MessageClass, encode, parse_topic
from support import add_device, connect


class FleetThread:
    """A :class:`Fleet` running on an event loop in a background thread (the test thread stays sync)."""

    def __init__(self, settings: SimSettings, creds: Credentials,
                 fault_plan: dict[int, frozenset[FaultKind]] | None = None) -> None:
        self.settings = settings
        self.creds = creds
        self.fault_plan = fault_plan
        self.fleet: Fleet | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started: Future[None] = Future()
        self._done: Future[SimSummary] = Future()
        self._thread = threading.Thread(target=self._run, name="sim-fleet", daemon=True)

    def start(self) -> FleetThread:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.fleet = Fleet(self.settings, self.creds, self.fault_plan)
            await self.fleet.start()
            self._started.set_result(None)
            await self._stop.wait()
            self._done.set_result(await self.fleet.stop())

        try:
            asyncio.run(main())
        except BaseException as exc:  # surface any crash to the test thread
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
        return fut.result(timeout=10)

    def summary(self) -> SimSummary:
        assert self.fleet is not None
        return self.call(self.fleet.summary)

    def stop(self) -> SimSummary:
        if self.loop is not None and self._stop is not None and not self._done.done():
            self.loop.call_soon_threadsafe(self._stop.set)
        summary = self._done.result(timeout=30)
        self._thread.join(10)
        return summary


@dataclass
class Seen:
    topic: str
    device: str
    cls: MessageClass
    payload: bytes
    at: float


class HubSubscriber:
    """A real paho client logged in with the hub role, recording everything under ``d/#``."""

    def __init__(self, port: int, registry: Registry) -> None:
        creds = add_device(registry, "hub", Role.HUB)
        self.client = connect(port, creds, client_id="hub-test")
        self.seen: list[Seen] = []
        self.client.on_message = self._on_message
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe([("d/+/t", 1), ("d/+/s", 1), ("d/+/r", 1)])
        assert done.wait(10), "no SUBACK for the hub subscriber"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic = parse_topic(msg.topic)
        self.seen.append(Seen(msg.topic, topic.device_id, topic.cls, msg.payload, time.monotonic()))

    def of(self, cls: MessageClass, device: str | None = None) -> list[Seen]:
        return [s for s in list(self.seen) if s.cls is cls and (device is None or s.device == device)]

    def devices(self, cls: MessageClass) -> set[str]:
        return {s.device for s in self.of(cls)}

    def command(self, device: str, cmd: Command, encoding: str = "json") -> None:
        info = self.client.publish(f"d/{device}/c", encode(cmd, encoding), qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Run finalizers at a safe point after each test (and after the broker fixture stopped).

    amqtt leaves StreamWriters of cancelled handlers behind; collected at a random later
    moment, their ResourceWarning can land inside an ``ast`` conversion of pytest's and trip
    CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905).
    """
    yield
    gc.collect()


@pytest.fixture
def hub(embedded_broker: Any, registry: Registry) -> Iterator[HubSubscriber]:
    sub = HubSubscriber(embedded_broker.port, registry)
    yield sub
    sub.close()


def settings_for(port: int, n: int, **kw: Any) -> SimSettings:
    """Test settings: fast rate, short fault start, brisk reconnects."""
    base: dict[str, Any] = dict(devices=n, port=port, rate=5.0, fault_start_s=0.5, fault_every=3,
                                reconnect_delay=0.2, storm_period_s=1.0, bad_login_retry_s=1.0)
    base.update(kw)
    return SimSettings(**base)


def provision_fleet(db_path: Path, n: int, prefix: str = "sim") -> Credentials:
    return provision(db_path, [device_id(prefix, i) for i in range(1, n + 1)])


def command(cmd_id: str, name: str, ttl_s: float = 60, **args: Any) -> Command:
    return Command(id=cmd_id, name=name, args=args, expires=int((time.time() + ttl_s) * 1000))
