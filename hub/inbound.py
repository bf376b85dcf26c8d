"""What arrives from the broker, and what the hub makes of it before storing.

:func:`classify` turns one raw PUBLISH into an :class:`Accepted` message, a
:class:`Rejected` one (a dead letter with its reason) or None (nothing to store, e.g. a
cleared retained status). It never raises: bad input is data, not an error. The three are
named tuples, not frozen dataclasses: one of each per message, and a frozen dataclass's
``__init__`` sets every field through ``object.__setattr__``.
"""

from __future__ import annotations

from typing import NamedTuple

from protocol.codec import decode
from protocol.errors import ProtocolError, Reason
from protocol.fastpath import TelemetryRows, decode_telemetry_rows
from protocol.refused import sequence_of
from protocol.models import Alert, CommandReply, Status, Telemetry
from protocol.topics import MessageClass, parse_topic

HUB_RECEIVES = (MessageClass.TELEMETRY, MessageClass.ALERT, MessageClass.STATUS, MessageClass.REPLY)


class Inbound(NamedTuple):
    """One PUBLISH as paho handed it over, plus when it arrived and on which connection."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    received_at: float
    generation: int
    """Connection number: a message is acked only on the connection that delivered it."""


class Accepted(NamedTuple):
    device_id: str
    cls: MessageClass
    message: TelemetryRows | Alert | Status | CommandReply
    """Telemetry arrives as plain rows (no pydantic model per reading: this is the hot path)."""


class Rejected(NamedTuple):
    device_id: str | None
    reason: Reason
    detail: str
    boot: int | None = None
    seq: int | None = None
    """The refused message's place in the device's seq stream, when the payload names it."""


_new = tuple.__new__  # a named tuple from all its fields, without the class's Python-level __new__ (hot path)
_SEQUENCED = (MessageClass.TELEMETRY, MessageClass.ALERT)
_TELEMETRY, _STATUS = MessageClass.TELEMETRY, MessageClass.STATUS
"""Read once: on Python 3.11 an enum member looked up on its class costs 100 ns, a module global 8 (per message)."""
_CONTENT_REASONS = (Reason.SCHEMA, Reason.UNKNOWN_METRIC, Reason.OUT_OF_RANGE)


def classify(msg: Inbound) -> Accepted | Rejected | None:
    """Decode ``msg`` by its topic; a dead-letter verdict for anything the protocol refuses."""
    try:
        topic = parse_topic(msg.topic)
    except ProtocolError as exc:
        return Rejected(None, exc.reason, exc.detail)
    cls = topic.cls
    if cls not in HUB_RECEIVES:
        return Rejected(topic.device_id, Reason.BAD_TOPIC, f"the hub does not take {cls.name.lower()} messages")
    if cls is _TELEMETRY:
        rows = decode_telemetry_rows(msg.payload)
        if rows is not None:
            return _new(Accepted, (topic.device_id, cls, rows))
    elif cls is _STATUS and not msg.payload:
        return None  # an empty retained payload clears the status: nothing to store
    try:
        message = decode(cls, msg.payload)  # the strict decoder: the verdict and its reason
    except ProtocolError as exc:
        if cls in _SEQUENCED and exc.reason in _CONTENT_REASONS:
            place = sequence_of(msg.payload)
            if place is not None:
                return Rejected(topic.device_id, exc.reason, exc.detail, *place)
        return Rejected(topic.device_id, exc.reason, exc.detail)
    if isinstance(message, Telemetry):
        message = TelemetryRows(message.boot, message.seq, message.ts,
                                [(r.dt, r.metric, r.value) for r in message.readings], message.dropped)
    return Accepted(topic.device_id, cls, message)  # type: ignore[arg-type]
