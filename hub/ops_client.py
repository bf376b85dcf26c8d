"""The operator's side of the command bridge: send requests to the hub and follow the results.

This is what ``fleet send`` uses; scripts can use it too. It speaks the operator protocol
of :mod:`protocol.ops` over MQTT, so it needs only a broker login with the operator role.
"""

from __future__ import annotations

import queue
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from hub.config import parse_broker_url
from hub.errors import HubError
from hub.transport import low_latency
from protocol.ops import (
    CommandUpdate,
    SendRequest,
    SendResponse,
    parse_ops_topic,
    request_topic,
    updates_topic,
)

class HubUnreachable(HubError):
    """The broker or the hub did not answer."""


class OpsClient:
    """An operator session with the hub over MQTT. Use as a context manager."""

    def __init__(self, broker: str, username: str, password: str, cafile: str | None = None,
                 connect_timeout: float = 5.0) -> None:
        self.broker = broker
        self.username = username
        self.password = password
        self.cafile = cafile
        self.connect_timeout = connect_timeout
        self._client: mqtt.Client | None = None
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._early: list[CommandUpdate] = []  # updates that arrived before send() returned

    def __enter__(self) -> OpsClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        addr = parse_broker_url(self.broker)
        client_id = f"{self.username}-{secrets.token_hex(3)}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.username_pw_set(self.username, self.password)
        low_latency(client)
        if addr.tls:
            client.tls_set(ca_certs=self.cafile, cert_reqs=ssl.CERT_REQUIRED)
        connected: queue.Queue[Any] = queue.Queue(1)
        client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
        client.on_message = lambda c, u, m: self._inbox.put((m.topic, m.payload))
        try:
            client.connect(addr.host, addr.port, keepalive=30)
        except OSError as exc:
            raise HubUnreachable(f"broker not reachable at {self.broker}: {exc.strerror or exc}") from None
        client.loop_start()
        try:
            rc = connected.get(timeout=self.connect_timeout)
        except queue.Empty:
            client.loop_stop()
            raise HubUnreachable(f"broker at {self.broker} did not answer CONNECT within {self.connect_timeout}s") from None
        if rc.is_failure:
            client.loop_stop()
            raise HubUnreachable(f"broker refused operator login {self.username!r}: {rc}")
        sub = client.subscribe(f"fleet/ops/{self.username}/#", qos=1)
        if sub[0] != mqtt.MQTT_ERR_SUCCESS:
            raise HubUnreachable("could not subscribe to the operator topics")
        self._client = client
        time.sleep(0.05)  # let the SUBACK land before the request goes out

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def send(self, devices: list[str], name: str, args: dict[str, Any] | None = None, ttl_s: float = 600.0,
             answer_timeout: float = 5.0) -> SendResponse:
        """Ask the hub to create commands; returns its answer. Raises HubUnreachable when it says nothing."""
        assert self._client is not None, "connect() first"
        req = SendRequest(req_id=secrets.token_hex(6), devices=devices, name=name, args=args or {}, ttl_s=ttl_s)
        self._client.publish(request_topic(self.username), req.model_dump_json().encode(), qos=1)
        deadline = time.monotonic() + answer_timeout
        while True:
            item = self._next(deadline)
            if item is None:
                raise HubUnreachable(f"no answer from the hub within {answer_timeout:g}s: is `fleet hub` running?")
            topic, payload = item
            parsed = parse_ops_topic(topic)
            if parsed and parsed[1] == "res":
                resp = SendResponse.model_validate_json(payload)
                if resp.req_id in (req.req_id, "?"):
                    return resp
            elif parsed and parsed[1] == "cmd":
                self._early.append(CommandUpdate.model_validate_json(payload))

    def updates(self, ids: set[str], timeout: float,
                on_update: Callable[[CommandUpdate], None] | None = None) -> dict[str, CommandUpdate]:
        """Follow ``ids`` until each reaches a final state or ``timeout`` passes; the last update of each."""
        last: dict[str, CommandUpdate] = {}
        deadline = time.monotonic() + timeout
        pending = set(ids)

        def take(update: CommandUpdate) -> None:
            if update.id in ids:
                last[update.id] = update
                if on_update:
                    on_update(update)
                if update.final:
                    pending.discard(update.id)

        for update in self._early:
            take(update)
        self._early.clear()
        while pending:
            item = self._next(deadline)
            if item is None:
                break
            topic, payload = item
            if topic == updates_topic(self.username):
                take(CommandUpdate.model_validate_json(payload))
        return last

    def _next(self, deadline: float) -> tuple[str, bytes] | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return self._inbox.get(timeout=remaining)
        except queue.Empty:
            return None

