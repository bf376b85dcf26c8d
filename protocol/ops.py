"""The operator protocol: how the CLI and other tools ask the hub to send commands.

Operators never publish to device topics. They publish a request on
``fleet/ops/<operator>/req``; the hub answers on ``fleet/ops/<operator>/res`` and reports
every state change of the commands it created for that operator on
``fleet/ops/<operator>/cmd``. All three are JSON, QoS 1, and guarded by the operator role.

A request is safe to retry. Its ``req_id`` is chosen by the operator, and the hub derives each
command's id from (operator, ``req_id``, device): a request that arrives twice (a retry after
"no answer", or the first copy delivered late by the broker) finds its commands already
recorded and answers with their current state instead of creating new ones. ``expires_at`` is
an absolute Unix time set when the operator issues the request (its TTL counts from then, not
from when the hub happens to receive it): a request that reaches the hub after it is refused
and never executed. The operator's and the hub's clocks must agree (NTP) to within the TTL.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.limits import LIMITS
from protocol.models import ArgValue, CommandState, ShortText

OPS_PREFIX = "fleet/ops"

MAX_TTL_S = LIMITS.max_command_ttl_s
"""The longest a command may wait for its device (firmware_protocol.md 6: devices remember command ids that long)."""


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


def new_request_id() -> str:
    """A fresh operator request id (``r`` + 12 hex digits); reuse it to retry the same request."""
    return "r" + secrets.token_hex(6)


def request_command_id(operator: str, req_id: str, device_id: str) -> str:
    """The id of the command that request ``req_id`` of ``operator`` creates for ``device_id``.

    Derived, not random, so that every copy of one request names the same commands.
    """
    digest = hashlib.sha256(f"{operator}\0{req_id}\0{device_id}".encode()).hexdigest()
    return "c" + digest[:16]


class SendRequest(OpsModel):
    """Send command ``name`` to each of ``devices``; the hub creates one command per device.

    ``expires_at`` (absolute Unix time, set by the operator when it issues the request) wins over
    ``ttl_s`` (counted from when the hub receives the request; for older clients).
    """

    req_id: ShortText
    op: Literal["send"] = "send"
    devices: Annotated[list[ShortText], Field(min_length=1, max_length=100_000)]
    name: ShortText
    args: Annotated[dict[ShortText, ArgValue], Field(max_length=LIMITS.max_command_args)] = {}
    ttl_s: Annotated[float, Field(gt=0, le=MAX_TTL_S)] = 600.0
    expires_at: Annotated[float, Field(gt=0)] | None = None


class CreatedCommand(OpsModel):
    """A command the request created (or, for a repeated request, had created before: ``repeated``)."""

    id: str
    device_id: str
    state: str = "queued"
    expires_at: float | None = None
    online: bool | None = None
    """Whether the hub sees the device online; an offline device gets the command on its next birth."""
    repeated: bool = False


class RefusedDevice(OpsModel):
    """A device the request created no command for, and why (``reason``: unknown_device, expired, bad_command)."""

    device_id: str
    error: str
    reason: str = ""


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
