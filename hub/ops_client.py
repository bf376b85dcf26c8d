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
from pydantic import ValidationError

from hub.config import parse_broker_url
from hub.errors import HubError
from hub.transport import PollingClient, low_latency
from protocol.limits import LIMITS
from protocol.ops import (
    CommandUpdate,
    HoldRequest,
    HoldResponse,
    SendRequest,
    SendResponse,
    new_request_id,
    parse_ops_topic,
    request_topic,
    updates_topic,
)

class HubUnreachable(HubError):
    """The broker or the hub did not answer (base of the two below)."""


class BrokerUnreachable(HubUnreachable):
    """No MQTT session: the broker is down, unreachable, or refused the operator's login."""


class NoAnswer(HubUnreachable):
    """The broker took the request but the hub did not answer in time; the message says what may still happen."""

    def __init__(self, message: str, req_id: str, expires_at: float) -> None:
        super().__init__(message)
        self.req_id = req_id
        self.expires_at = expires_at


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
        client = PollingClient(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.username_pw_set(self.username, self.password)
        low_latency(client)
        if addr.tls:
            client.tls_set(ca_certs=self.cafile, cert_reqs=ssl.CERT_REQUIRED)
        connected: queue.Queue[Any] = queue.Queue(1)
        subscribed: queue.Queue[Any] = queue.Queue(1)
        client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
        client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(rcs)
        client.on_message = lambda c, u, m: self._inbox.put((m.topic, m.payload))
        try:
            client.connect(addr.host, addr.port, keepalive=30)
        except OSError as exc:
            raise BrokerUnreachable(f"broker not reachable at {self.broker}: {exc.strerror or exc}; nothing was sent") from None
        client.loop_start()
        try:
            rc = connected.get(timeout=self.connect_timeout)
        except queue.Empty:
            client.loop_stop()
            raise BrokerUnreachable(f"broker at {self.broker} did not answer CONNECT within "
                                    f"{self.connect_timeout:g}s; nothing was sent") from None
        if rc.is_failure:
            client.loop_stop()
            raise BrokerUnreachable(f"broker refused operator login {self.username!r}: {rc} (check -u and "
                                    f"--password-file / $FLEET_OPERATOR_PASSWORD); nothing was sent")
        # the hub's answer goes to this subscription: it must be granted before the request goes out,
        # or the answer to the first request can be lost (a fixed sleep here lost it on a busy machine)
        sub = client.subscribe(f"fleet/ops/{self.username}/#", qos=1)
        try:
            granted = subscribed.get(timeout=self.connect_timeout) if sub[0] == mqtt.MQTT_ERR_SUCCESS else None
        except queue.Empty:
            granted = None
        if not granted or any(rc.is_failure for rc in granted):
            client.disconnect()
            client.loop_stop()
            raise BrokerUnreachable(f"broker at {self.broker} did not grant the operator topics "
                                    f"fleet/ops/{self.username}/#; nothing was sent")
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def send(self, devices: list[str], name: str, args: dict[str, Any] | None = None, ttl_s: float = 600.0,
             answer_timeout: float = 5.0, req_id: str | None = None, expires_at: float | None = None) -> SendResponse:
        """Ask the hub to create commands; returns its answer.

        ``req_id`` names the request (a fresh one by default): sending again with the same id never
        creates a second command. ``expires_at`` (default now + ``ttl_s``) is absolute: the hub does
        not execute a request that reaches it later. Raises :class:`NoAnswer` when the hub says nothing.
        """
        assert self._client is not None, "connect() first"
        if not 0 < ttl_s <= LIMITS.max_command_ttl_s:
            raise HubError(f"command TTL {ttl_s:g} s is outside 0..{LIMITS.max_command_ttl_s} s "
                           f"(firmware_protocol.md section 6: devices remember command ids for at most a day)")
        expires_at = time.time() + ttl_s if expires_at is None else expires_at
        req = SendRequest(req_id=req_id or new_request_id(), devices=devices, name=name, args=args or {},
                          ttl_s=ttl_s, expires_at=expires_at)
        payload = req.model_dump_json().encode()
        self._client.publish(request_topic(self.username), payload, qos=1)
        # A request published before the hub's session subscribed (the hub is starting, on a broker
        # that holds no session for it yet) reaches nobody: send it again, same id, until answered.
        # Copies are harmless: the hub answers a repeated req_id with the commands it already made.
        start = time.monotonic()
        deadline = start + answer_timeout
        resend_after = 1.0
        while True:
            item = self._next(min(deadline, start + resend_after))
            if item is None and time.monotonic() < deadline:
                self._client.publish(request_topic(self.username), payload, qos=1)
                resend_after *= 2
                continue
            if item is None:
                until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires_at))
                raise NoAnswer(f"no answer from the hub within {answer_timeout:g}s (is `fleet hub` running?): "
                               f"request {req.req_id} is with the broker and runs only if the hub takes it before "
                               f"{until}; retrying with --request-id {req.req_id} never runs it twice",
                               req.req_id, expires_at)
            topic, payload = item
            parsed = parse_ops_topic(topic)
            if parsed and parsed[1] == "res":
                resp = SendResponse.model_validate_json(payload)
                if resp.req_id in (req.req_id, "?"):
                    return resp
            elif parsed and parsed[1] == "cmd":
                self._early.append(CommandUpdate.model_validate_json(payload))

    def hold_watermarks(self, device_id: str, lease_s: float, answer_timeout: float = 5.0) -> HoldResponse:
        """Ask the hub to withhold ``device_id``'s watermarks for ``lease_s`` (again to renew); its answer."""
        return self._hold(HoldRequest(req_id=secrets.token_hex(6), op="hold_watermarks", device_id=device_id,
                                      lease_s=lease_s), answer_timeout)

    def release_watermarks(self, device_id: str, answer_timeout: float = 5.0) -> HoldResponse:
        """End the hold: the hub publishes the device's current watermark at once."""
        return self._hold(HoldRequest(req_id=secrets.token_hex(6), op="release_watermarks", device_id=device_id),
                          answer_timeout)

    def _hold(self, req: HoldRequest, answer_timeout: float) -> HoldResponse:
        assert self._client is not None, "connect() first"
        self._client.publish(request_topic(self.username), req.model_dump_json().encode(), qos=1)
        deadline = time.monotonic() + answer_timeout
        while True:
            item = self._next(deadline)
            if item is None:
                raise HubUnreachable(f"no answer from the hub within {answer_timeout:g}s: is `fleet hub` running?")
            topic, payload = item
            parsed = parse_ops_topic(topic)
            if parsed and parsed[1] == "res":
                try:
                    resp = HoldResponse.model_validate_json(payload)
                except ValidationError:
                    continue  # the answer to another request of this login
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

