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
                   will_retain: bool = True, will_qos: int = 1) -> bytes:
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
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return b"\x10" + _remaining_length(len(body)) + body


def raw_connect(port: int, client_id: str, timeout: float = 5.0, **kwargs) -> tuple[socket.socket, int]:  # type: ignore[no-untyped-def]
    """Open a socket, send CONNECT, return (socket, CONNACK return code)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(connect_packet(client_id, **kwargs))
    connack = _read_exactly(sock, 4)
    assert connack[0] == 0x20, f"expected CONNACK, got {connack!r}"
    return sock, connack[3]


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
