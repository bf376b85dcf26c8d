"""The checker's MQTT session with one device: watch its topics, publish on its ``c`` and ``w``.

The checker logs in with the **hub role** (only that role may publish on a device's ``c`` and
``w``). paho's thread only appends what arrives to a log under a condition variable; the
checker's thread reads the log and waits on it with deadlines (no sleeps). Messages the checker
published itself come back on its own subscription: they are marked ``mine``, so a watermark or
command that is *not* mine shows that a hub is answering the device too.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from broker.url import parse_broker_url
from hub.errors import HubError
from hub.transport import PollingClient, low_latency
from protocol import MessageClass, ProtocolError, decode, encode, topic_for
from protocol.codec import detect_encoding
from protocol.config import ConfigSet
from protocol.models import Command, Message, Watermark
from protocol.text import inert
from protocol.topics import DEVICE_SUBSCRIBES


_SENT_ON: dict[type, MessageClass] = {Command: MessageClass.COMMAND, Watermark: MessageClass.WATERMARK,
                                     ConfigSet: MessageClass.CONFIG_SET}
"""The topic class of each message the checker sends."""


class LinkError(HubError):
    """The checker could not log in or talk to the broker."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One message on one of the device's topics, as the checker received it."""

    index: int
    at: float
    """time.monotonic() when it arrived."""
    cls: MessageClass
    payload: bytes
    retained: bool
    mine: bool
    message: Message | None
    """Strictly decoded (section 8); None when it does not decode."""
    error: str = ""
    """Why it does not decode (the hub's dead-letter reason and detail)."""

    @property
    def form(self) -> str:
        return detect_encoding(self.payload).value if self.payload else "empty"

    def describe(self) -> str:
        arrow = "->" if self.cls in DEVICE_SUBSCRIBES else "<-"
        who = "checker" if self.mine else ("hub" if arrow == "->" else "device")
        flags = " retained" if self.retained else ""
        body = _short(self.message) if self.message is not None else f"UNDECODABLE {self.error}"
        return f"{arrow} {self.cls.value} ({who}, {self.form}{flags}) {inert(body)}"


def _short(message: Message) -> str:
    text = message.model_dump_json(exclude_defaults=True)
    return text if len(text) <= 200 else text[:197] + "..."


class DeviceLink:
    """A hub-role MQTT session subscribed to every topic of one device."""

    def __init__(self, broker: str, username: str, password: str, device_id: str, cafile: str | None = None,
                 connect_timeout: float = 10.0) -> None:
        self.address = parse_broker_url(broker)
        self.broker = broker
        self.username = username
        self.password = password
        self.device_id = device_id
        self.cafile = cafile
        self.connect_timeout = connect_timeout
        self._cond = threading.Condition()
        self._log: list[Seen] = []
        self._mine: dict[tuple[MessageClass, bytes], int] = {}
        self._client: mqtt.Client | None = None

    # ------------------------------------------------------------ session

    def __enter__(self) -> DeviceLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _new_client(self, client_id: str, clean: bool) -> mqtt.Client:
        client = PollingClient(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                               protocol=mqtt.MQTTv311)
        client.username_pw_set(self.username, self.password)
        low_latency(client)
        if self.address.tls:
            client.tls_set(ca_certs=self.cafile, cert_reqs=ssl.CERT_REQUIRED)
        return client

    def _connect(self, client: mqtt.Client) -> None:
        done = threading.Event()
        outcome: list[object] = []

        def on_connect(c: mqtt.Client, u: object, flags: object, rc: mqtt.ReasonCode, p: object) -> None:
            outcome.append(rc)
            done.set()

        client.on_connect = on_connect
        try:
            client.connect(self.address.host, self.address.port, keepalive=30)
        except OSError as exc:
            raise LinkError(f"broker not reachable at {self.broker}: {exc.strerror or exc}") from None
        client.loop_start()
        if not done.wait(self.connect_timeout):
            client.loop_stop()
            raise LinkError(f"broker at {self.broker} did not answer CONNECT within {self.connect_timeout:g}s")
        rc = outcome[0]
        if getattr(rc, "is_failure", True):
            client.loop_stop()
            raise LinkError(f"broker refused the checker's login {self.username!r} ({rc}): it needs the hub role")

    def open(self) -> None:
        """Log in and subscribe to ``d/<id>/+`` at QoS 1 (retained status and watermark arrive first)."""
        client = self._new_client(f"{self.username}-{secrets.token_hex(3)}", clean=True)
        self._connect(client)
        client.on_message = self._on_message
        granted = threading.Event()
        codes: list[object] = []

        def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: list[mqtt.ReasonCode], p: object) -> None:
            codes.extend(rcs)
            granted.set()

        client.on_subscribe = on_subscribe
        client.subscribe(f"d/{self.device_id}/+", qos=1)
        if not granted.wait(self.connect_timeout) or any(getattr(rc, "is_failure", True) for rc in codes):
            client.loop_stop()
            raise LinkError(f"could not subscribe to d/{self.device_id}/+ ({codes}): the checker needs the hub role")
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        cls_name = msg.topic.rsplit("/", 1)[-1]
        try:
            cls = MessageClass(cls_name)
        except ValueError:
            return  # not one of the six classes; the broker should not have routed it
        payload = bytes(msg.payload)
        message: Message | None = None
        error = ""
        try:
            message = decode(cls, payload)
        except ProtocolError as exc:
            error = f"{exc.reason.value}: {exc}"
        with self._cond:
            key = (cls, payload)
            mine = not msg.retain and self._mine.get(key, 0) > 0
            if mine:
                self._mine[key] -= 1
            self._log.append(Seen(len(self._log), time.monotonic(), cls, payload, bool(msg.retain), mine, message,
                                  error))
            self._cond.notify_all()

    # ------------------------------------------------------------ reading the log

    def mark(self) -> int:
        """The index the next message will get: pass it to :meth:`since` and :meth:`wait_for`."""
        with self._cond:
            return len(self._log)

    def since(self, index: int) -> list[Seen]:
        with self._cond:
            return self._log[index:]

    def wait_for(self, predicate: Callable[[Seen], bool], start: int, timeout: float) -> Seen | None:
        """The first message from ``start`` on that satisfies ``predicate``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        pos = start
        with self._cond:
            while True:
                while pos < len(self._log):
                    seen = self._log[pos]
                    pos += 1
                    if predicate(seen):
                        return seen
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def wait_until(self, condition: Callable[[list[Seen]], bool], start: int, timeout: float) -> bool:
        """Wait until ``condition(messages since start)`` holds; False when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition(self._log[start:]):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # ------------------------------------------------------------ talking to the device

    def publish(self, cls: MessageClass, payload: bytes, retain: bool = False) -> None:
        """Publish ``payload`` on the device's ``c`` or ``w`` at QoS 1 and wait for the broker's PUBACK."""
        assert self._client is not None, "open() first"
        with self._cond:
            key = (cls, payload)
            self._mine[key] = self._mine.get(key, 0) + 1
        info = self._client.publish(topic_for(self.device_id, cls), payload, qos=1, retain=retain)
        info.wait_for_publish(self.connect_timeout)
        if not info.is_published():
            raise LinkError(f"no PUBACK from the broker for a publish on d/{self.device_id}/{cls.value}")

    def send(self, message: Command | Watermark | ConfigSet, form: str, retain: bool = False) -> bytes:
        """Encode ``message`` (a command, watermark or ConfigSet) in ``form`` (json or cbor) and publish it on its
        class's topic."""
        cls = _SENT_ON[type(message)]
        payload = encode(message, form)
        self.publish(cls, payload, retain=retain)
        return payload

    def retained(self, cls: MessageClass, timeout: float) -> bytes | None:
        """The payload the broker holds retained on the device's ``cls`` topic, through a fresh subscription."""
        client = self._new_client(f"{self.username}-{secrets.token_hex(3)}", clean=True)
        got: list[bytes] = []
        done = threading.Event()

        def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
            if msg.retain:
                got.append(bytes(msg.payload))
                done.set()

        client.on_message = on_message
        self._connect(client)
        try:
            client.subscribe(topic_for(self.device_id, cls), qos=1)
            done.wait(timeout)
        finally:
            client.disconnect()
            client.loop_stop()
        return got[0] if got else None

    def drop_device_session(self) -> None:
        """Make the broker forget the device's session, as a broker restart without persistence would.

        Connects with the device's client id and ``clean_session=1`` (the broker closes the device's
        connection and discards its session and subscriptions), then disconnects. The hub role may
        use any client id; devices may not.
        """
        client = self._new_client(self.device_id, clean=True)
        self._connect(client)
        client.disconnect()
        client.loop_stop()
