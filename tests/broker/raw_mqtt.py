"""Hand-built MQTT 3.1.1 packets over a plain socket, for clients that misbehave on purpose."""

from __future__ import annotations

import socket
import struct


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


def connect_packet(client_id: str, *, username: str | None = None, password: str | None = None,
                   keepalive: int = 60, clean: bool = True, will: tuple[str, bytes] | None = None,
                   will_retain: bool = True, will_qos: int = 1, level: int = 4, name: str = "MQTT",
                   properties: bytes | None = None) -> bytes:
    """A CONNECT; ``level``/``name`` for other MQTT versions, ``properties`` (MQTT 5) after keep-alive."""
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _str(will[0]) + _str(will[1])
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    props = b"" if properties is None else _remaining_length(len(properties)) + properties
    body = _str(name) + bytes([level, flags]) + struct.pack("!H", keepalive) + props + payload
    return b"\x10" + _remaining_length(len(body)) + body


def raw_connect(port: int, client_id: str, timeout: float = 5.0, **kwargs) -> tuple[socket.socket, int]:  # type: ignore[no-untyped-def]
    """Open a socket, send CONNECT, return (socket, CONNACK return code)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(connect_packet(client_id, **kwargs))
    connack = _read_exactly(sock, 4)
    assert connack[0] == 0x20, f"expected CONNACK, got {connack!r}"
    return sock, connack[3]


def raw_session(port: int, client_id: str, timeout: float = 5.0, source: str | None = None,
                **kwargs) -> tuple[socket.socket, int, int]:  # type: ignore[no-untyped-def]
    """Like :func:`raw_connect`, returning (socket, session-present flag, CONNACK return code).

    ``source``: the local address to connect from (any 127.x.y.z on Linux), to look like another host.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    sock.sendall(connect_packet(client_id, **kwargs))
    connack = _read_exactly(sock, 4)
    assert connack[0] == 0x20, f"expected CONNACK, got {connack!r}"
    return sock, connack[2] & 0x01, connack[3]


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """True when the peer closes ``sock`` within ``timeout`` (anything it sends is discarded)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


def packet(first_byte: int, body: bytes) -> bytes:
    """Any packet: first byte (type << 4 | flags) and body, with the remaining length encoded."""
    return bytes([first_byte]) + _remaining_length(len(body)) + body


def publish_packet(topic: str | bytes, payload: bytes = b"", *, qos: int = 0, packet_id: int = 1,
                   retain: bool = False, dup: bool = False) -> bytes:
    """A PUBLISH; ``topic`` as bytes to send invalid UTF-8, ``qos=3`` to send a forbidden QoS."""
    flags = (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(0x30 | flags, body)


def subscribe_packet(topic: str, qos: int = 1, packet_id: int = 1, flags: int = 0x02) -> bytes:
    return packet(0x80 | flags, struct.pack("!H", packet_id) + _str(topic) + bytes([qos]))


def ack_packet(kind: str, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP for ``packet_id``."""
    first = {"puback": 0x40, "pubrec": 0x50, "pubrel": 0x62, "pubcomp": 0x70}[kind]
    return packet(first, struct.pack("!H", packet_id))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


def read_packet(sock: socket.socket) -> tuple[int, int, bytes]:
    """The next packet from ``sock`` as (type, flags, body); ConnectionError when it closes."""
    first = _read_exactly(sock, 1)[0]
    length, multiplier = 0, 1
    while True:
        byte = _read_exactly(sock, 1)[0]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            break
        multiplier *= 128
    return first >> 4, first & 0x0F, _read_exactly(sock, length) if length else b""


def parse_publish(flags: int, body: bytes) -> tuple[str, int | None, bytes]:
    """(topic, packet id or None, payload) of a PUBLISH body read with :func:`read_packet`."""
    n = struct.unpack("!H", body[:2])[0]
    topic, pos = body[2:2 + n].decode(), 2 + n
    packet_id = None
    if (flags >> 1) & 3:
        packet_id, pos = struct.unpack("!H", body[pos:pos + 2])[0], pos + 2
    return topic, packet_id, body[pos:]
