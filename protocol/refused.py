"""What can still be read of a payload the protocol refuses: its ``boot`` and ``seq``.

A telemetry or alert message refused for its content (a schema breach, an unknown metric, a
value out of range) still names its place in the device's seq stream; the hub records the
dead letter under it so that the watermark moves past it (firmware_protocol.md 7.1).
"""

from __future__ import annotations

import json
from typing import Any

from protocol.errors import ProtocolError
from protocol.limits import LIMITS
from protocol.strict import loads_cbor


def sequence_of(payload: bytes) -> tuple[int, int] | None:
    """``(boot, seq)`` of a refused telemetry or alert payload, or None when they cannot be read."""
    data: Any
    try:
        if payload[:1] == b"{":
            data = json.loads(payload)
            boot, seq = data.get("boot"), data.get("seq")
        else:
            data = loads_cbor(payload)
            boot, seq = data.get("b"), data.get("q")
    except (ValueError, RecursionError, AttributeError, ProtocolError):
        return None
    if type(boot) is not int or type(seq) is not int:
        return None
    if not (0 <= boot <= LIMITS.max_u32 and 0 <= seq <= LIMITS.max_u32):
        return None
    return boot, seq
