"""Socket options and paho clients for the hub.

:class:`PollingClient` is the paho client every hub-side session uses (ingest, commands, firmware,
configuration, the operator's ``fleet send`` and the dashboard's sender, health checks, ``device-check``):
paho waits on its socket with ``select()``, which cannot take a descriptor above 1023, and a process
such as ``fleet up`` (broker, hub and thousands of simulated devices in one) holds more sockets than
that. :class:`IngestClient` builds on it with the ingest path's buffered reads and batched PUBACKs.

paho leaves Nagle's algorithm on. A command round trip is a chain of small packets (request,
state update, command, PUBACKs, replies); with Nagle each second small write waits for the
peer's delayed ACK, about 40 ms a hop. asyncio peers (amqtt, the simulator) already set
TCP_NODELAY; this does the same for paho.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import sys
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

if TYPE_CHECKING:
    from hub.config import HubSettings


def _nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def low_latency(client: mqtt.Client) -> mqtt.Client:
    """Turn off Nagle's algorithm on every socket ``client`` opens; returns the client."""
    client.on_socket_open = _nodelay
    return client


def hub_session(client: mqtt.Client, settings: HubSettings, password: str | None) -> mqtt.Client:
    """Set up one of the hub's MQTT sessions (ingest, commands, firmware, configuration) the same way:
    its login, TLS when the broker URL asks for it, no Nagle, quick reconnects. Returns the client."""
    if settings.username:
        client.username_pw_set(settings.username, password)
    if settings.address.tls:
        client.tls_set(ca_certs=str(settings.cafile) if settings.cafile else None, cert_reqs=ssl.CERT_REQUIRED)
    low_latency(client)
    client.reconnect_delay_set(0.2, 5)
    return client


READ_CHUNK = 65536
"""Bytes asked of the socket per read: many PUBLISH packets per system call."""

_HEAD = struct.Struct("!BBH")
"""A PUBLISH's first byte, a one-byte remaining length and the topic's length (the fast path's packet)."""


def pubacks(mids: list[int]) -> bytes:
    """The PUBACK packets (0x40, 0x02, packet id big-endian) of ``mids``, back to back.

    Built by slice assignment, in C: the packet ids as one big-endian 16-bit array, interleaved with the
    two fixed bytes (a ``struct.pack`` per id cost three times as much, once per message).
    """
    n = len(mids)
    ids = array("H", mids)
    if sys.byteorder == "little":
        ids.byteswap()
    raw = ids.tobytes()
    out = bytearray(4 * n)
    out[0::4] = b"\x40" * n
    out[1::4] = b"\x02" * n
    out[2::4] = raw[0::2]
    out[3::4] = raw[1::2]
    return bytes(out)


Publish = tuple[bytes, bytes, int, int, bool]
"""(topic bytes, payload, packet id, qos, retain) of one PUBLISH."""
PublishSink = Callable[[list[Publish]], None]
"""Takes the PUBLISH packets of one socket read, in order, on paho's network thread."""


_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL
"""What makes paho read: data, or a hang-up or error that its read then reports (``select`` shows those as readable)."""


class PollingClient(mqtt.Client):
    """paho's client (2.x) waiting with ``poll()`` instead of ``select()``: any descriptor number works.

    With ``select()``, a socket numbered 1024 or more makes every wait fail with ValueError, which paho
    takes for a lost connection: it reconnects, gets a high number again, and never hears CONNACK. In
    ``fleet up`` with 600 simulated devices (two sockets each, in the same process) that was every
    session opened after the devices: the dashboard's command sender, and the hub's own reconnects.
    :meth:`_loop` is paho 2.2's with the wait replaced and nothing else changed.
    """

    def _loop(self, timeout: float = 1.0) -> mqtt.MQTTErrorCode:  # overrides paho's (select.select)
        if timeout < 0.0:
            raise ValueError("Invalid timeout.")
        sock = self._sock
        if sock is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        pending_bytes = sock.pending() if hasattr(sock, "pending") else 0  # decrypted TLS bytes not read yet
        if pending_bytes > 0:
            timeout = 0.0
        wake = self._sockpairR  # written by publish() and friends to end the wait early
        poller = select.poll()
        try:
            fd = sock.fileno()
            poller.register(fd, select.POLLIN | select.POLLPRI | (select.POLLOUT if self.want_write() else 0))
            if wake is not None:
                poller.register(wake.fileno(), select.POLLIN)
            events = dict(poller.poll(timeout * 1000))
        except (OSError, ValueError, TypeError):
            # the socket was closed under us (disconnect() from another thread, or the connection died): as paho
            if self._state not in (mqtt._ConnectionState.MQTT_CS_DISCONNECTING,
                                   mqtt._ConnectionState.MQTT_CS_DISCONNECTED):
                self._state = mqtt._ConnectionState.MQTT_CS_CONNECTION_LOST
            return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
        ready = events.get(fd, 0)
        if ready & _READABLE or pending_bytes > 0:
            rc = self.loop_read()
            if rc or self._sock is None:
                return rc
        writable = bool(ready & select.POLLOUT)
        if wake is not None and events.get(wake.fileno(), 0) & select.POLLIN:
            writable = True  # something was queued after the wait began: try to write it now
            try:
                wake.recv(10000)  # one byte per wake-up: up to 10,000 of them at once
            except BlockingIOError:
                pass
        if writable and self._sock is not None:
            rc = self.loop_write()
            if rc or self._sock is None:
                return rc
        return self.loop_misc()


class IngestClient(PollingClient):
    """paho's client with buffered socket reads and PUBACKs sent in batches (paho-mqtt 2.x).

    paho reads one packet per readable event, in three or more ``recv`` calls (the fixed
    header byte, each length byte, the rest): at the broker's rate the hub's network thread
    spent most of its time in ``_sock_recv``. Here ``_sock_recv`` serves paho's small reads
    from one large read, and ``loop_read`` keeps going while that buffer holds bytes (the
    socket may have nothing more to say, so ``select`` would not wake paho for them).
    :meth:`ack_many` queues the PUBACKs of a whole committed batch as one write instead of
    one queued packet and one wake-up per message. ``message_callback_add`` is not supported:
    every message goes to ``on_message``.

    With a :attr:`publish_sink`, every complete QoS 0/1 PUBLISH already in the read buffer is
    cut out of it right here and the sink gets them as one list, without paho's per-packet
    reads, packet dict, ``MQTTMessage`` and callback dispatch. An empty buffer, or one that
    ends inside a packet, is topped up with one more read first. Anything else (another
    packet type, a packet the socket has not finished sending, QoS 2, MQTT 5) goes through
    paho's own ``_packet_read``, which then calls ``on_message`` as usual.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self.publish_sink: PublishSink | None = None

    def _sock_recv(self, bufsize: int) -> bytes:  # overrides paho's (one recv per call)
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(READ_CHUNK)  # BlockingIOError when nothing is there: paho's "again"
            if len(data) <= bufsize:
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, self._rpos = data, 0
        pos = self._rpos
        self._rpos = pos + bufsize
        return self._rbuf[pos:pos + bufsize]

    def _packet_read(self) -> mqtt.MQTTErrorCode:  # overrides paho's (one packet, read piecewise)
        sink = self.publish_sink
        if sink is None or self._in_packet["command"] != 0 or self._protocol == mqtt.MQTTv5:
            return super()._packet_read()
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        publishes: list[Publish] = []
        append = publishes.append
        head = _HEAD.unpack_from
        for refill in (True, False):
            cut = pos == end  # the buffer ends before the next packet does
            while pos < end:
                if pos + 4 <= end:  # the common packet first: QoS 1, remaining length in one byte (under 128)
                    cmd, length, topic_len = head(buf, pos)
                    if cmd & 0xF6 == 0x32 and length < 0x80:
                        stop = pos + 2 + length
                        if stop > end:
                            cut = True
                            break
                        topic_end = pos + 4 + topic_len
                        if topic_end + 2 > stop:
                            break  # malformed: paho reports it
                        mid = (buf[topic_end] << 8) | buf[topic_end + 1]
                        append((buf[pos + 4:topic_end], buf[topic_end + 2:stop], mid, 1, (cmd & 1) == 1))
                        pos = stop
                        continue
                cmd = buf[pos]
                if cmd & 0xF0 != 0x30 or cmd & 0x06 > 0x02:  # PUBLISH at QoS 0 or 1 only
                    break
                i, length, shift = pos + 1, 0, 0
                while i < end and shift <= 21:  # remaining length: up to 4 bytes, 7 bits each
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                else:
                    cut = i == end  # else malformed: paho reads it and reports it
                    break
                stop = i + length
                if stop > end:
                    cut = True
                    break
                if length < 2:
                    break
                topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                qos = (cmd >> 1) & 3
                mid = ((buf[topic_end] << 8) | buf[topic_end + 1]) if qos and topic_end + 2 <= stop else 0
                if topic_end + (2 if qos else 0) > stop:
                    break  # malformed: paho reports it
                append((buf[i + 2:topic_end], buf[topic_end + (2 if qos else 0):stop], mid, qos, bool(cmd & 1)))
                pos = stop
            if not (refill and cut):
                break
            # empty, or cut inside a packet: read what the socket holds onto the rest, instead of leaving that
            # packet to paho's piecewise reads (on a small read, most of them were)
            try:
                data = super()._sock_recv(READ_CHUNK)
            except OSError:  # BlockingIOError (nothing yet) included; paho's own read reports anything else
                break
            if not data:
                break  # the connection closed: paho's read sees it too
            buf = self._rbuf = buf[pos:] + data
            pos, end = 0, len(buf)
        self._rpos = pos
        if not publishes:
            return super()._packet_read()
        sink(publishes)
        now = mqtt.time_func()
        with self._msgtime_mutex:  # what paho records per packet, for its keepalive
            self._last_msg_in = now
            self._last_bytes_received = now
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf) and self._sock is not None:
            rc = super().loop_read(1)
        return rc

    def _sock_close(self) -> None:  # a new connection must not read the old one's leftovers
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:  # overrides paho's
        # paho matches every message against message_callback_add filters first (a topic tree
        # walk per message); the hub uses only on_message, so call it directly
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def ack_many(self, mids: list[int]) -> None:
        """Acknowledge QoS 1 messages by packet id in one queued write (``manual_ack`` clients)."""
        if mids:
            self._packet_queue(mqtt.PUBACK, pubacks(mids), 0, 0)
