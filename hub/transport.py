"""Socket options and a faster paho client for the hub.

paho leaves Nagle's algorithm on. A command round trip is a chain of small packets (request,
state update, command, PUBACKs, replies); with Nagle each second small write waits for the
peer's delayed ACK, about 40 ms a hop. asyncio peers (amqtt, the simulator) already set
TCP_NODELAY; this does the same for paho.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import paho.mqtt.client as mqtt


def _nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def low_latency(client: mqtt.Client) -> mqtt.Client:
    """Turn off Nagle's algorithm on every socket ``client`` opens; returns the client."""
    client.on_socket_open = _nodelay
    return client


READ_CHUNK = 65536
"""Bytes asked of the socket per read: many PUBLISH packets per system call."""

_PUBACK = struct.Struct("!BBH")


class IngestClient(mqtt.Client):
    """paho's client with buffered socket reads and PUBACKs sent in batches (paho-mqtt 2.x).

    paho reads one packet per readable event, in three or more ``recv`` calls (the fixed
    header byte, each length byte, the rest): at the broker's rate the hub's network thread
    spent most of its time in ``_sock_recv``. Here ``_sock_recv`` serves paho's small reads
    from one large read, and ``loop_read`` keeps going while that buffer holds bytes (the
    socket may have nothing more to say, so ``select`` would not wake paho for them).
    :meth:`ack_many` queues the PUBACKs of a whole committed batch as one write instead of
    one queued packet and one wake-up per message. ``message_callback_add`` is not supported:
    every message goes to ``on_message``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

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
            self._packet_queue(mqtt.PUBACK, b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]), 0, 0)
