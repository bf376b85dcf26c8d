"""A small asyncio MQTT 3.1.1 client, sized for thousands of connections on one event loop.

Why not paho: paho's ``Client`` carries a thread, locks, several dicts and deques per
connection, and its asyncio bridge needs a socket callback per event. This client is one
:class:`asyncio.Protocol` per connection with a byte buffer and a dict of in-flight packet
ids, so 10,000 of them fit in a few hundred MB and need no thread.

It speaks what a device needs: CONNECT (will, username, password, clean session),
PUBLISH at QoS 0/1 with PUBACK tracking, inbound PUBLISH at QoS 0/1/2, SUBSCRIBE/SUBACK,
PINGREQ/PINGRESP keep-alive, DISCONNECT. No MQTT 5, no TLS (the simulator targets local
brokers), no automatic reconnect: the device owns its lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.errors import FleetError

log = logging.getLogger("fleet.sim.mqtt")

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

PINGREQ_BYTES = b"\xc0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


class MqttError(FleetError):
    """The MQTT connection failed or was used after it closed."""


class ConnectRefused(MqttError):
    """The broker answered CONNECT with a non-zero return code (``.code``)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"connection refused: {CONNACK_REASONS.get(code, 'unknown')} (rc={code})")
        self.code = code


@dataclass(frozen=True, slots=True)
class Will:
    """The last will the broker publishes if the connection dies without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining_length(len(body)) + body


def connect_packet(client_id: str, *, username: str | None, password: str | None, will: Will | None,
                   clean_session: bool, keepalive: int) -> bytes:
    """The bytes of a CONNECT packet (MQTT 3.1.1, protocol level 4)."""
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _str(will.topic) + _str(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    body = _str("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive) + payload
    return _packet(CONNECT << 4, body)


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, pid: int | None, dup: bool = False) -> bytes:
    """The bytes of a PUBLISH packet."""
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _str(topic) + (struct.pack("!H", pid) if qos and pid is not None else b"") + payload
    return _packet(first, body)


class MqttClient(asyncio.Protocol):
    """One MQTT connection. Create, ``await connect(...)``, then publish/subscribe; ``closed`` resolves on loss.

    Callbacks run on the event loop inside ``data_received``; they must not block:

    * ``on_message(topic, payload, retain)`` for each inbound PUBLISH (acknowledged before the call),
    * ``on_puback(packet_id)`` when a QoS 1 publish is acknowledged.
    """

    __slots__ = ("on_message", "on_puback", "transport", "closed", "_buf", "_connack", "_suback",
                 "_next_pid", "inflight", "_keepalive", "_ping_handle", "_last_send", "_last_recv",
                 "_silent", "bytes_out", "_loop")

    def __init__(self, on_message: Callable[[str, bytes, bool], None] | None = None,
                 on_puback: Callable[[int], None] | None = None) -> None:
        self.on_message = on_message
        self.on_puback = on_puback
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._buf = bytearray()
        self._connack: asyncio.Future[bool] | None = None
        self._suback: dict[int, asyncio.Future[list[int]]] = {}
        self._next_pid = 0
        self.inflight: set[int] = set()
        self._keepalive = 0
        self._ping_handle: asyncio.TimerHandle | None = None
        self._last_send = 0.0
        self._last_recv = 0.0
        self._silent = False
        self.bytes_out = 0

    # ------------------------------------------------------------------ public API

    async def connect(self, host: str, port: int, client_id: str, *, username: str | None = None,
                      password: str | None = None, will: Will | None = None, clean_session: bool = True,
                      keepalive: int = 60, timeout: float = 30.0) -> bool:
        """Open the TCP connection and log in; returns the broker's session-present flag.

        Raises :class:`ConnectRefused` for a refused login, :class:`MqttError` or ``OSError``
        for network failures, ``TimeoutError`` when no CONNACK arrives in ``timeout``.
        """
        self._connack = self._loop.create_future()
        # after a CONNACK timeout nobody awaits it any more; a later "connection lost" must not log
        # "Future exception was never retrieved" with a traceback (the caller already handled the timeout)
        self._connack.add_done_callback(_retrieve)
        # asyncio.timeout, never asyncio.wait_for: on Python 3.11, wait_for returns the result and
        # drops a cancel that arrives in the same loop pass as the result (fixed in 3.12). A device
        # task cancelled just as its CONNACK or SUBACK came in then kept running, and Fleet.stop()
        # waited for it forever (a disconnect-storm test's stop timed out once on a busy machine).
        async with asyncio.timeout(timeout):
            await self._loop.create_connection(lambda: self, host, port)
        self._keepalive = keepalive
        self._send(connect_packet(client_id, username=username, password=password, will=will,
                                  clean_session=clean_session, keepalive=keepalive))
        try:
            async with asyncio.timeout(timeout):
                present = await asyncio.shield(self._connack)
        except BaseException:
            self.abort()
            raise
        if keepalive:
            self._ping_handle = self._loop.call_later(keepalive / 2, self._ping_tick)
        return present

    @property
    def is_connected(self) -> bool:
        return self.transport is not None and not self.closed.done()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, *,
                pid: int | None = None, dup: bool = False) -> int | None:
        """Send a PUBLISH; returns its packet id for QoS 1 (pass ``pid`` to re-send with that id)."""
        if qos:
            if pid is None:
                pid = self._new_pid()
            self.inflight.add(pid)
        self._send(publish_packet(topic, payload, qos, retain, pid, dup))
        return pid

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 30.0) -> list[int]:
        """Subscribe and wait for SUBACK; returns the granted QoS per filter (0x80 = refused)."""
        pid = self._new_pid()
        body = struct.pack("!H", pid) + b"".join(_str(f) + bytes((q,)) for f, q in filters)
        fut: asyncio.Future[list[int]] = self._loop.create_future()
        fut.add_done_callback(_retrieve)
        self._suback[pid] = fut
        self._send(_packet((SUBSCRIBE << 4) | 0x02, body))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._suback.pop(pid, None)

    def disconnect(self) -> None:
        """Send DISCONNECT (the broker discards the will) and close."""
        if self.is_connected:
            self._send(DISCONNECT_BYTES)
        self.close()

    def close(self) -> None:
        """Close the socket after flushing (no DISCONNECT: the broker fires the will)."""
        self._cancel_ping()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket at once, unsent bytes included (a device losing power)."""
        self._cancel_ping()
        if self.transport is not None:
            self.transport.abort()

    def go_silent(self) -> None:
        """Keep the socket open but never send another byte, not even PINGREQ (silent death)."""
        self._silent = True
        self._cancel_ping()

    # ------------------------------------------------------------------ internals

    def _new_pid(self) -> int:
        for _ in range(65535):
            self._next_pid = self._next_pid % 65535 + 1
            if self._next_pid not in self.inflight and self._next_pid not in self._suback:
                return self._next_pid
        raise MqttError("no free packet id: 65535 messages in flight")

    def _send(self, data: bytes) -> None:
        if self._silent:
            return
        if self.transport is None or self.closed.done():
            raise MqttError("not connected")
        self.transport.write(data)
        self.bytes_out += len(data)
        self._last_send = self._loop.time()

    def _cancel_ping(self) -> None:
        if self._ping_handle is not None:
            self._ping_handle.cancel()
            self._ping_handle = None

    def _ping_tick(self) -> None:
        now = self._loop.time()
        if self.transport is None or self.closed.done() or self._silent:
            return
        if now - self._last_recv > self._keepalive * 1.5 + 1:
            log.info("keepalive lost, closing")
            self.abort()
            return
        if now - self._last_send >= self._keepalive / 2:
            self._send(PINGREQ_BYTES)
        self._ping_handle = self._loop.call_later(self._keepalive / 2, self._ping_tick)

    # asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._last_recv = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_ping()
        err = MqttError(f"connection lost: {exc}" if exc else "connection closed")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(err)
        for fut in self._suback.values():
            if not fut.done():
                fut.set_exception(err)
        if not self.closed.done():
            self.closed.set_result(None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._last_recv = self._loop.time()
        buf = self._buf
        buf += data
        while True:
            # fixed header: 1 byte type/flags, 1-4 bytes remaining length
            if len(buf) < 2:
                return
            length, mult, i = 0, 1, 1
            while True:
                if i >= len(buf):
                    return
                byte = buf[i]
                length += (byte & 0x7F) * mult
                mult *= 128
                i += 1
                if not byte & 0x80:
                    break
                if i > 4:
                    self._protocol_error("bad remaining length")
                    return
            if len(buf) < i + length:
                return
            first = buf[0]
            body = bytes(buf[i:i + length])
            del buf[:i + length]
            self._handle(first, body)
            if self.transport is None:
                return

    def _protocol_error(self, why: str) -> None:
        log.warning("mqtt protocol error: %s", why)
        self.abort()

    def _handle(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            qos = (first >> 1) & 3
            tlen = struct.unpack_from("!H", body)[0]
            topic = body[2:2 + tlen].decode("utf-8", "replace")
            pos = 2 + tlen
            if qos:
                pid = struct.unpack_from("!H", body, pos)[0]
                pos += 2
                ack = PUBACK if qos == 1 else PUBREC
                self._send(_packet(ack << 4, struct.pack("!H", pid)))
            if self.on_message is not None:
                self.on_message(topic, body[pos:], bool(first & 1))
        elif kind == PUBACK:
            pid = struct.unpack_from("!H", body)[0]
            self.inflight.discard(pid)
            if self.on_puback is not None:
                self.on_puback(pid)
        elif kind == CONNACK:
            present, rc = body[0] & 1, body[1]
            if self._connack is not None and not self._connack.done():
                if rc:
                    self._connack.set_exception(ConnectRefused(rc))
                else:
                    self._connack.set_result(bool(present))
        elif kind == SUBACK:
            pid = struct.unpack_from("!H", body)[0]
            fut = self._suback.get(pid)
            if fut is not None and not fut.done():
                fut.set_result(list(body[2:]))
        elif kind == PUBREL:
            self._send(_packet(PUBCOMP << 4, body[:2]))
        elif kind in (PINGRESP, UNSUBACK, PUBREC, PUBCOMP):
            pass  # PINGRESP only refreshes _last_recv; we never send QoS 2 or UNSUBSCRIBE
        else:
            self._protocol_error(f"unexpected packet type {kind}")


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: its waiter may have given up already (a timeout)."""
    if not fut.cancelled():
        fut.exception()
