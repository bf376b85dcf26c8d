"""The embedded broker: amqtt with the registry's authentication and topic rules.

``EmbeddedBroker`` is the one object to start and stop. It binds 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from amqtt.broker import Broker

from broker.access import AccessControl
from broker.config import BrokerSettings
from broker.registry import Registry

log = logging.getLogger("fleet.broker")


class FleetBroker(Broker):
    """amqtt's broker with the project's access control attached (plugins reach it as ``access``)."""

    def __init__(self, config: dict[str, Any], access: AccessControl, settings: BrokerSettings) -> None:
        self.access = access
        self.settings = settings
        super().__init__(config)


def amqtt_config(settings: BrokerSettings) -> dict[str, Any]:
    """The amqtt configuration for ``settings`` (our plugins replace amqtt's defaults)."""
    listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{settings.host}:{settings.port}"}}
    if settings.ws_port is not None:
        listeners["ws"] = {"type": "ws", "bind": f"{settings.host}:{settings.ws_port}"}
    if settings.tls_port is not None:
        if not (settings.certfile and settings.keyfile):
            raise ValueError("a TLS listener needs certfile and keyfile")
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{settings.host}:{settings.tls_port}",
            "ssl": True,
            "certfile": str(settings.certfile),
            "keyfile": str(settings.keyfile),
        }
    for listener in listeners.values():
        listener["max_connections"] = settings.max_connections
    return {
        "listeners": listeners,
        "plugins": {
            "broker.auth.RegistryAuthPlugin": {},
            "broker.auth.RegistryTopicPlugin": {},
        },
    }


class EmbeddedBroker:
    """Start and stop an amqtt broker guarded by the device registry.

    Use as ``async with EmbeddedBroker(settings) as broker:`` or call :meth:`start` and
    :meth:`stop` yourself. Must be started inside a running event loop.
    """

    def __init__(self, settings: BrokerSettings | None = None, registry: Registry | None = None) -> None:
        self.settings = settings or BrokerSettings()
        self.registry = registry or Registry(self.settings.db)
        self.access = AccessControl(self.registry, allow_anonymous=self.settings.allow_anonymous)
        self._broker: FleetBroker | None = None

    async def start(self) -> None:
        """Bind the listeners and start serving."""
        self._broker = FleetBroker(amqtt_config(self.settings), self.access, self.settings)
        await self._broker.start()
        log.info("broker listening host=%s port=%s", self.settings.host, self.port)

    async def stop(self) -> None:
        """Disconnect everyone and close the listeners."""
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
        self.access.close()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def amqtt(self) -> FleetBroker:
        """The running amqtt broker (for the workarounds and tests)."""
        if self._broker is None:
            raise RuntimeError("broker is not running")
        return self._broker

    def bound_port(self, listener: str = "default") -> int:
        """The port a listener actually bound (useful when the setting was 0)."""
        server = self.amqtt._servers[listener].instance
        if isinstance(server, asyncio.Server):
            return int(server.sockets[0].getsockname()[1])
        return int(next(iter(server.sockets)).getsockname()[1])

    @property
    def port(self) -> int:
        return self.bound_port("default")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
