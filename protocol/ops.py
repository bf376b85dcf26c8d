"""The operator protocol: how the CLI and other tools ask the hub to send commands.

Operators never publish to device topics. They publish a request on
``fleet/ops/<operator>/req``; the hub answers on ``fleet/ops/<operator>/res`` and reports
every state change of the commands it created for that operator on
``fleet/ops/<operator>/cmd``. All three are JSON, QoS 1, and guarded by the operator role.
"""

from __future__ import annotations

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
    ttl_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 600.0


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
