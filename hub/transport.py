"""Socket options for the hub's paho clients.

paho leaves Nagle's algorithm on. A command round trip is a chain of small packets (request,
state update, command, PUBACKs, replies); with Nagle each second small write waits for the
peer's delayed ACK, about 40 ms a hop. asyncio peers (amqtt, the simulator) already set
TCP_NODELAY; this does the same for paho.
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt


def _nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def low_latency(client: mqtt.Client) -> mqtt.Client:
    """Turn off Nagle's algorithm on every socket ``client`` opens; returns the client."""
    client.on_socket_open = _nodelay
    return client
