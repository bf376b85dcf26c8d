"""The embedded broker: amqtt with the registry's authentication and topic rules.

``EmbeddedBroker`` is the one object to start and stop. It binds 127.0.0.1 by default.
``FleetBroker`` is amqtt's ``Broker`` with the workarounds of ``broker/AMQTT_NOTES.md``
mixed in, one module per concern:

- :mod:`broker.login`: authenticate before touching sessions, clean take-over, nothing sent
  on connect (#8, #6)
- :mod:`broker.routing`: drain before disconnect, offline queue without RETAIN, QoS, retained
  ACL, payload limit, checked wills (#1, #3, #5, #6, #11)
- :mod:`broker.connection`: keep-alive enforcement and a packet size cap (#2, #11)
- :mod:`broker.inflight`: redelivery of unacknowledged QoS 1 and 2 messages after a reconnect (#4)
- :mod:`broker.reader`: a strict packet reader (malformed packets close the connection at once)
  with per-device quotas (:mod:`broker.quota`) enforced as backpressure on the device's own socket
- :mod:`broker.login_throttle`: back-off for failed logins per device id and source address;
  :mod:`broker.log_summary`: denials and refusals logged once per interval, then counted
- :mod:`broker.subscriptions`: a subscription index (no scan over every filter per message or
  per disconnect)
- :mod:`broker.access`: password hashes checked off the event loop (#9); :mod:`broker.acl`:
  topic rules without wildcard escalation (#7)
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from amqtt.broker import Broker

from broker.access import AccessControl
from broker.config import BrokerSettings
from broker.connection import KeepAliveWatchdog
from broker.log_summary import LogSummary
from broker.login import LoginFirstMixin
from broker.login_throttle import LoginThrottle
from broker.metrics import BrokerCollector
from broker.quota import UNLIMITED, QuotaBook
from broker.registry import Registry, Role
from broker.revocation import RevocationWatch
from broker.routing import RoutingMixin
from broker.stats import BrokerCounters
from broker.subscriptions import SubscriptionIndexMixin
from hub.metrics import serve_metrics

log = logging.getLogger("fleet.broker")


class FleetBroker(LoginFirstMixin, RoutingMixin, SubscriptionIndexMixin, Broker):
    """amqtt's broker with the project's access control and defect workarounds (see module doc).

    Plugins reach the access control as ``context._broker_instance.access``.
    """

    def __init__(self, config: dict[str, Any], access: AccessControl, settings: BrokerSettings) -> None:
        self.access = access
        self.settings = settings
        self.counters = access.counters
        self.notes = access.notes
        self.quotas = QuotaBook(
            {None: settings.device_quota, Role.DEVICE: settings.device_quota, Role.HUB: UNLIMITED,
             Role.OPERATOR: UNLIMITED},
            access.registry.quota_override,
        )
        self._housekeeping: asyncio.Task[None] | None = None
        self.published_counters: dict[str, float] = self.counters.snapshot()
        """A copy of the counters made on the loop once a second, for readers on other threads."""
        super().__init__(config)
        self.keepalive = KeepAliveWatchdog(lambda: self._sessions.values(), settings.keepalive_grace)
        self.revocations = RevocationWatch(access.registry, access,
                                           lambda pid: self.disconnect_user(pid, discard_sessions=True),
                                           settings.revocation_check_s)

    async def start(self) -> None:
        await super().start()
        self.keepalive.start()
        self.revocations.start()
        self._housekeeping = asyncio.create_task(self._flush_notes(), name="fleet-log-summary")

    async def _flush_notes(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.notes.flush()
            self.published_counters = self.counters.snapshot()  # swapped whole: see broker.metrics

    async def shutdown(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
        self.notes.flush()
        await self.revocations.stop()
        await self.keepalive.stop()
        await super().shutdown()

    async def disconnect_user(self, username: str, *, discard_sessions: bool = False) -> list[str]:
        """Close every live connection logged in as ``username``; returns their client ids.

        The will of each closed connection is published (the client did not say goodbye). With
        ``discard_sessions`` the sessions (subscriptions, offline queues) are deleted as well.
        """
        closed = []
        for client_id, (session, handler) in list(self._sessions.items()):
            if session.username != username:
                continue
            if session.transitions.is_connected():
                log.info("disconnecting client_id=%s username=%s", client_id, username)
                await self.close_connection(session, handler)
                closed.append(client_id)
            if discard_sessions:
                await self._delete_session(client_id)
        return closed


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
            # topic rules are applied by FleetBroker directly (broker.routing), not by a plugin
            "broker.auth.RegistryAuthPlugin": {},
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
        s = self.settings
        self.access = AccessControl(
            self.registry, allow_anonymous=s.allow_anonymous,
            throttle=LoginThrottle(s.login_free_failures, s.address_free_failures, s.login_backoff_max_s),
            notes=LogSummary(logging.getLogger("fleet.broker.guard"), s.log_summary_s),
            counters=BrokerCounters(),
        )
        self._broker: FleetBroker | None = None
        self._metrics_server: Any = None

    async def start(self) -> None:
        """Bind the listeners and start serving."""
        self._broker = FleetBroker(amqtt_config(self.settings), self.access, self.settings)
        await self._broker.start()
        if self.settings.metrics_port is not None:
            try:
                self._metrics_server, _ = serve_metrics(BrokerCollector(self._published), self.settings.metrics_port)
            except OSError:
                await self.stop()
                raise
        log.info("broker listening host=%s port=%s", self.settings.host, self.port)

    def _published(self) -> dict[str, float]:
        broker = self._broker
        return broker.published_counters if broker is not None else {}

    @property
    def metrics_port(self) -> int | None:
        """The port the Prometheus endpoint bound (None when it is off)."""
        return int(self._metrics_server.server_port) if self._metrics_server is not None else None

    async def stop(self) -> None:
        """Disconnect everyone and close the listeners."""
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
        self.access.close()

    def counters(self) -> dict[str, float]:
        """How often each guard acted (quotas, throttled logins, violations, denials); call on the loop."""
        return self.access.counters.snapshot()

    async def disconnect_client(self, client_id: str) -> bool:
        """Close the live connection of ``client_id`` now (its will is published). False when not connected."""
        entry = self.amqtt._sessions.get(client_id)
        if entry is None or not entry[0].transitions.is_connected():
            return False
        await self.amqtt.close_connection(*entry)
        return True

    async def revoke(self, principal_id: str) -> list[str]:
        """Revoke ``principal_id`` in the registry and throw its live connections out at once.

        Drops its cached login (:meth:`AccessControl.forget`), closes every connection logged in
        under that name and deletes their sessions, so nothing queued for it survives. Returns the
        client ids that were connected. ``fleet devices revoke`` only writes the registry; a
        running broker notices it within ``revocation_check_s`` (:mod:`broker.revocation`).
        """
        self.registry.revoke(principal_id)
        self.access.forget(principal_id)
        return await self.amqtt.disconnect_user(principal_id, discard_sessions=True)

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
