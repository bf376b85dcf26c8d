"""The operator protocol: how the CLI and other tools ask the hub to send commands.

Operators never publish to device topics. They publish a request on
``fleet/ops/<operator>/req``; the hub answers on ``fleet/ops/<operator>/res`` and reports
every state change of the commands it created for that operator on
``fleet/ops/<operator>/cmd``. All three are JSON, QoS 1, and guarded by the operator role.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.limits import LIMITS
from protocol.models import ArgValue, CommandState, ShortText

OPS_PREFIX = "fleet/ops"


def request_topic(operator: str) -> str:
    return f"{OPS_PREFIX}/{operator}/req"


def response_topic(operator: str) -> str:
    return f"{OPS_PREFIX}/{operator}/res"


def updates_topic(operator: str) -> str:
    return f"{OPS_PREFIX}/{operator}/cmd"


def parse_ops_topic(topic: str) -> tuple[str, str] | None:
    """``fleet/ops/<operator>/<kind>`` -> (operator, kind), or None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != OPS_PREFIX:
        return None
    return parts[2], parts[3]


class OpsModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SendRequest(OpsModel):
    """Send command ``name`` to each of ``devices``; the hub creates one command per device."""

    req_id: ShortText
    op: Literal["send"] = "send"
    devices: Annotated[list[ShortText], Field(min_length=1, max_length=100_000)]
    name: ShortText
    args: Annotated[dict[ShortText, ArgValue], Field(max_length=LIMITS.max_command_args)] = {}
    ttl_s: Annotated[float, Field(gt=0, le=LIMITS.max_command_ttl_s)] = 600.0


class CreatedCommand(OpsModel):
    id: str
    device_id: str


class RefusedDevice(OpsModel):
    device_id: str
    error: str


class SendResponse(OpsModel):
    """The hub's answer: which commands it recorded, and which devices it refused and why."""

    req_id: str
    ok: bool
    commands: list[CreatedCommand] = []
    refused: list[RefusedDevice] = []
    error: str = ""


class CommandUpdate(OpsModel):
    """One state change of one command."""

    id: str
    device_id: str
    name: str
    state: CommandState
    ts: float
    final: bool
    detail: str = ""
    result: dict[str, Any] = {}


CHECKER_COMMAND_PREFIX = "chk-"
"""Command ids ``fleet device-check`` gives the commands it publishes itself (not through the bridge).

While the checker holds a device's watermarks, the hub counts replies with such ids as the
checker's (``checker_replies``) instead of warning about replies to commands it never sent."""

MAX_HOLD_LEASE_S = 300.0
"""The longest lease of a watermark hold: a checker that dies leaves the device held at most this long."""


class HoldRequest(OpsModel):
    """Hold (or release) the hub's watermarks for one device: ``fleet device-check`` with a hub running.

    While held, the hub stores the device's messages exactly as always but publishes no watermark
    on ``d/<device>/w`` (the checker plays that part). The hold ends on ``release_watermarks`` or
    when ``lease_s`` passes without a renewal (the same request again); either way the hub then
    publishes the device's current watermark at once. Only logins with the hub or operator role.
    """

    req_id: ShortText
    op: Literal["hold_watermarks", "release_watermarks"]
    device_id: ShortText
    lease_s: Annotated[float, Field(gt=0, le=MAX_HOLD_LEASE_S)] = 30.0


class HoldResponse(OpsModel):
    """The hub's answer to a :class:`HoldRequest`: ``held_until`` is the lease's end (unix seconds, 0 once released)."""

    req_id: str
    ok: bool
    device_id: str = ""
    held_until: float = 0.0
    error: str = ""


HOLD_OPS = frozenset({"hold_watermarks", "release_watermarks"})


def request_op(payload: bytes) -> str | None:
    """The ``op`` of an operator request, or None when the payload is not a JSON object (the send path judges it)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    op = doc.get("op") if isinstance(doc, dict) else None
    return op if isinstance(op, str) else None
