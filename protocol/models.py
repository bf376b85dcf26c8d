"""Pydantic models of every wire message (the readable JSON form uses these field names).

Models are frozen and strict: a wrong type is a schema error, never coerced. Semantic
checks that need the metric table (names, ranges) live in :mod:`protocol.codec` so that
they map onto their own dead-letter reasons.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

from protocol.limits import LIMITS

U32 = Annotated[int, Field(ge=0, le=LIMITS.max_u32)]
EpochMs = Annotated[int, Field(gt=0, lt=2**48)]
"""Milliseconds since the Unix epoch, UTC; in a device's ``ts``, a value below
``LIMITS.uptime_ts_below`` counts milliseconds since the device's power-up instead."""
OptionalEpochMs = Annotated[int, Field(ge=0, lt=2**48)]
"""Like :data:`EpochMs`, with 0 meaning "unknown" (and omitted on the wire)."""
ShortText = Annotated[str, Field(min_length=1, max_length=32)]
Text = Annotated[str, Field(max_length=LIMITS.max_text_len)]
ArgValue = str | bool | int | FiniteFloat
"""A command argument or result value; JSON has no inf or NaN, so neither form carries them."""


class WireModel(BaseModel):
    """Base of all wire messages: frozen, strict, no unknown fields."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class Reading(WireModel):
    """One value of one metric, ``dt`` milliseconds after the message's ``ts``."""

    dt: Annotated[int, Field(ge=0, le=LIMITS.max_offset_ms)] = 0
    metric: ShortText
    value: Annotated[float, Field(allow_inf_nan=False)]
    """Finite; checked in pydantic's core, not in Python (it runs once per reading on the hub's hot path)."""


class Sequenced(WireModel):
    """Fields of the two message classes that take a ``seq`` (telemetry and alerts)."""

    @model_validator(mode="after")
    def _dropped_below_seq(self) -> Sequenced:
        dropped, seq = getattr(self, "dropped"), getattr(self, "seq")
        if dropped and dropped >= seq:
            raise ValueError(f"dropped ({dropped}) must be below seq ({seq})")
        return self


class Telemetry(Sequenced):
    """A batch of readings; ``seq`` counts messages (telemetry and alerts) within a boot."""

    boot: U32
    seq: U32
    ts: EpochMs
    readings: Annotated[list[Reading], Field(min_length=1, max_length=LIMITS.max_readings_per_batch)]
    dropped: U32 = 0
    """The device holds no message of this boot with a seq up to this one any more: the ones the
    hub has not got are given up (0: nothing given up that the hub's watermark does not cover)."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Sequenced):
    """A condition the device wants an operator to see; shares the ``seq`` counter with telemetry."""

    boot: U32
    seq: U32
    ts: EpochMs
    code: ShortText
    severity: Annotated[Severity, Field(strict=False)] = Severity.WARNING
    message: Text = ""
    dropped: U32 = 0
    """As in :class:`Telemetry`."""


class StatusState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Status(WireModel):
    """Birth (``online``, published retained after CONNECT) or last will (``offline``)."""

    state: Annotated[StatusState, Field(strict=False)]
    boot: U32
    fw: Annotated[str, Field(max_length=32)] = ""
    caps: Annotated[list[ShortText], Field(max_length=32)] = []
    enc: Literal["json", "cbor"] = "json"
    interval_s: Annotated[int, Field(ge=1, le=86_400)] = 60
    """Heartbeat period: the device sends something at least this often while online."""
    boot_ts: OptionalEpochMs = 0
    """Wall-clock time of this boot's power-up (uptime 0), for devices that stamp uptime (0: unknown)."""
    desc: Annotated[str, Field(pattern=r"^([0-9a-f]{16})?$")] = ""
    """Hash of the device's description (``protocol.config.description_hash``; "": not described)."""
    cfg: U32 = 0
    """The configuration version the device has applied (section 13; 0: none)."""
    sleep_s: Annotated[int, Field(ge=0, le=604_800)] = 0
    """A sleepy device: it sleeps between wakes and wakes at least this often (seconds; 0: never sleeps).
    The hub shows it ``sleeping``, not offline, between wakes (firmware_protocol.md 4.5)."""


class Command(WireModel):
    """An operator's instruction to one device. A device executes each ``id`` at most once."""

    id: ShortText
    name: ShortText
    args: Annotated[dict[ShortText, ArgValue], Field(max_length=LIMITS.max_command_args)] = {}
    expires: EpochMs


class CommandState(StrEnum):
    """Every state of a command: the one enum of the hub, the CLI, the dashboard and the devices.

    A device replies only with :data:`DEVICE_REPLY_STATES` (``received``, then a result); the hub
    records the others: ``queued`` (stored, not yet sent), ``sent``, ``delivered`` (the device
    said ``received``), and the final ``expired`` and ``timed_out``.
    """

    QUEUED = "queued"
    SENT = "sent"
    RECEIVED = "received"
    DELIVERED = "delivered"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"

    @property
    def final(self) -> bool:
        """True for the states a command never leaves."""
        return self in FINAL_COMMAND_STATES


FINAL_COMMAND_STATES = frozenset({CommandState.SUCCEEDED, CommandState.FAILED, CommandState.REJECTED,
                                  CommandState.EXPIRED, CommandState.TIMED_OUT})
"""A command in one of these states is done; nothing moves it again."""

DEVICE_REPLY_STATES = (CommandState.RECEIVED, CommandState.SUCCEEDED, CommandState.FAILED, CommandState.REJECTED)
"""The states a device may put in a :class:`CommandReply` (in this order in the binary form)."""


class CommandReply(WireModel):
    """A device's acknowledgement (``received``) or result (the other states) of a command."""

    id: ShortText
    state: Annotated[CommandState, Field(strict=False)]
    detail: Text = ""
    result: Annotated[dict[ShortText, ArgValue], Field(max_length=LIMITS.max_command_args)] = {}

    @field_validator("state")
    @classmethod
    def _device_state(cls, state: CommandState) -> CommandState:
        if state not in DEVICE_REPLY_STATES:
            raise ValueError(f"a device replies {', '.join(DEVICE_REPLY_STATES)}, not {state.value!r}")
        return state


class Watermark(WireModel):
    """The hub has dealt with every message of ``boot`` up to and including ``seq``.

    Dealt with: stored, dead-lettered, or given up by the device (``dropped``). When the hub
    also has messages above a missing one, ``next`` is the lowest seq it has above ``seq`` and
    ``max`` the highest; both are 0 (omitted) otherwise. ``ts`` is the hub's clock.
    """

    boot: U32
    seq: U32
    next: U32 = 0
    max: U32 = 0
    ts: OptionalEpochMs = 0

    @model_validator(mode="after")
    def _gap_fields(self) -> Watermark:
        if (self.next or self.max) and not self.seq + 1 < self.next <= self.max:
            raise ValueError(f"next and max must satisfy seq + 1 < next <= max (seq {self.seq}, next {self.next}, "
                             f"max {self.max})")
        return self


Message = Telemetry | Alert | Status | Command | CommandReply | Watermark
