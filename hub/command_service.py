"""The hub's command side: its own MQTT session for operator requests and commands, and the bridge thread.

Replies and presence reach the bridge from the ingest path (after they are committed) via
:meth:`CommandService.on_batch`; operator requests arrive on this service's own session, so a
flood of telemetry never delays them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt

from broker.registry import Registry, Role
from hub.commands import CommandBridge, CommandSettings, DeviceLink
from hub.config import HubSettings
from hub.device_config import check_command
from hub.errors import HubError
from hub.storage import CommandRecord, CommandStore, PresenceStore
from hub.transport import PollingClient, hub_session
from hub.watermark_holds import WatermarkHolds
from hub.writer import BatchResult
from protocol.ops import OPS_PREFIX, parse_ops_topic

log = logging.getLogger("fleet.hub.commands")


class CommandService:
    """Owns the command bridge thread and the MQTT session it publishes on."""

    def __init__(self, settings: HubSettings, password: str | None, command_settings: CommandSettings | None = None,
                 holds: WatermarkHolds | None = None) -> None:
        self.settings = settings
        self.holds = holds or WatermarkHolds()
        self.password = password
        self.command_settings = command_settings or CommandSettings()
        self.bridge: CommandBridge | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._subscribed = threading.Event()
        self._client: mqtt.Client | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._main, name="fleet-hub-commands", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise HubError("command bridge did not start")
        self._client = self._make_client()
        addr = self.settings.address
        self._client.connect_async(addr.host, addr.port, keepalive=self.settings.keepalive)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise HubError(f"command session could not subscribe to operator requests on {self.settings.broker}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _main(self) -> None:
        db = str(self.settings.db)
        store = CommandStore(db)
        registry = Registry(store.conn)

        def known_device(device_id: str) -> bool:
            p = registry.get(device_id)
            return p is not None and p.active and p.role is Role.DEVICE

        def may_hold(username: str) -> bool:
            p = registry.get(username)
            return p is not None and p.active and p.role in (Role.HUB, Role.OPERATOR)

        owner = self.settings.mqtt_client_id if self.settings.worker_group else None
        self.bridge = CommandBridge(store, self._publish, known_device, self.command_settings, owner=owner,
                                    holds=self.holds, may_hold=may_hold,
                                    check_args=lambda d, n, a: check_command(store.conn, d, n, a))
        links = PresenceStore(store.conn).links()
        self.bridge.seed_presence({r.device_id: DeviceLink(r.state == "online", r.enc or "json") for r in links})
        self._ready.set()
        self.bridge.run(self._stop)

    # ------------------------------------------------------------ MQTT session

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = PollingClient(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{s.mqtt_client_id}-cmd",
                               clean_session=False, protocol=mqtt.MQTTv311)
        hub_session(client, s, self.password)
        # in a worker group each operator request reaches exactly one worker, which creates and owns the command
        client.on_connect = lambda c, u, f, rc, p: rc.is_failure or c.subscribe(s.shared(f"{OPS_PREFIX}/+/req"), qos=1)
        client.on_subscribe = lambda c, u, mid, rcs, p: any(rc.is_failure for rc in rcs) or self._subscribed.set()
        client.on_message = self._on_message
        return client

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        parsed = parse_ops_topic(message.topic)
        if parsed and parsed[1] == "req" and self.bridge is not None:
            self.bridge.post("request", parsed[0], message.payload)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if self._client is None:
            log.warning("command session not connected; publish deferred to retry topic=%s", topic)
            return
        self._client.publish(topic, payload, qos=qos, retain=retain)

    # ------------------------------------------------------------ from the ingest path and callers

    def on_batch(self, result: BatchResult) -> None:
        """Ingest hook: committed replies and presence changes go to the bridge."""
        if self.bridge is None:
            return
        for device_id, reply in result.replies:
            self.bridge.post("reply", device_id, reply)
        for event in result.presence:
            self.bridge.post("presence", event.device_id, event.state == "online")

    def submit(self, device_id: str, name: str, args: dict[str, Any] | None = None, ttl_s: float | None = None,
               operator: str | None = None) -> CommandRecord:
        """Create a command from this process (thread-safe; runs on the bridge thread)."""
        assert self.bridge is not None
        bridge = self.bridge
        return bridge.call(lambda: bridge.submit(device_id, name, args, ttl_s, operator))  # type: ignore[no-any-return]
