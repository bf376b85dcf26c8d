"""Topic names: one short namespace per device.

Every PUBLISH carries its topic in full, so topics are short: ``d/<device>/<class>``
with a one-letter class is ``4 + len(device_id)`` bytes, plus MQTT's 2-byte length
prefix on the wire.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import ProtocolError, Reason
from protocol.limits import LIMITS

ROOT = "d"
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,%d}$" % (LIMITS.max_device_id_len - 1))


class MessageClass(StrEnum):
    """The message classes of the protocol; the value is the topic's last level."""

    TELEMETRY = "t"
    """device -> hub, QoS 1: readings."""
    ALERT = "a"
    """device -> hub, QoS 1: alerts."""
    STATUS = "s"
    """device -> hub, QoS 1, retained: birth, and last will set at CONNECT."""
    COMMAND = "c"
    """hub -> device, QoS 1: commands."""
    REPLY = "r"
    """device -> hub, QoS 1: command acknowledgements and results."""
    WATERMARK = "w"
    """hub -> device, QoS 1, retained: the highest seq the hub has persisted."""
    FIRMWARE_OFFER = "o"
    """hub -> device, QoS 1, retained: the firmware image the device should run (firmware_protocol.md 12)."""
    FIRMWARE_REQUEST = "g"
    """device -> hub, QoS 1: a request for one chunk of the offered image."""
    FIRMWARE_CHUNK = "f"
    """hub -> device, QoS 1: one chunk of the image, the answer to a request."""
    FIRMWARE_REPORT = "u"
    """device -> hub, QoS 1: the state of a firmware update on the device."""
    CONFIG_SET = "k"
    """hub -> device, QoS 1: desired configuration, the keys that differ from the last report (section 13)."""
    CONFIG_REPORT = "n"
    """device -> hub, QoS 1: the configuration keys a device applied or refused, with the version."""
    DESCRIPTION = "x"
    """device -> hub, QoS 1, retained: the device's description (metrics, commands, config keys)."""


DEVICE_PUBLISHES = (MessageClass.TELEMETRY, MessageClass.ALERT, MessageClass.STATUS, MessageClass.REPLY,
                    MessageClass.FIRMWARE_REQUEST, MessageClass.FIRMWARE_REPORT, MessageClass.CONFIG_REPORT,
                    MessageClass.DESCRIPTION)
DEVICE_SUBSCRIBES = (MessageClass.COMMAND, MessageClass.WATERMARK, MessageClass.FIRMWARE_OFFER,
                     MessageClass.FIRMWARE_CHUNK, MessageClass.CONFIG_SET)


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed device topic."""

    device_id: str
    cls: MessageClass

    def __str__(self) -> str:
        return topic_for(self.device_id, self.cls)


def valid_device_id(device_id: str) -> bool:
    """True when ``device_id`` may be used as a device id (and MQTT username and client id)."""
    return bool(DEVICE_ID_RE.match(device_id))


def topic_for(device_id: str, cls: MessageClass) -> str:
    """The topic of message class ``cls`` for ``device_id``."""
    if not valid_device_id(device_id):
        raise ProtocolError(Reason.BAD_TOPIC, f"invalid device id {device_id!r}")
    return f"{ROOT}/{device_id}/{cls.value}"


def subscription_for(cls: MessageClass) -> str:
    """The wildcard filter that matches ``cls`` for every device (used by the hub)."""
    return f"{ROOT}/+/{cls.value}"


@functools.lru_cache(maxsize=1 << 16)
def parse_topic(topic: str) -> Topic:
    """Parse a device topic; raise :class:`ProtocolError` (bad_topic) for anything else."""
    # cached: the hub parses the same few topics per device for every message; the id regex, the enum
    # look-up and the Topic were a third of the writer's decode time (py-spy, bench/README.md). A
    # refused topic raises and is not cached; topics are bounded by the LRU, whatever devices send.
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != ROOT:
        raise ProtocolError(Reason.BAD_TOPIC, f"not a device topic: {topic[:80]!r}")
    if not valid_device_id(parts[1]):
        raise ProtocolError(Reason.BAD_TOPIC, f"invalid device id in topic: {topic[:80]!r}")
    try:
        cls = MessageClass(parts[2])
    except ValueError:
        raise ProtocolError(Reason.BAD_TOPIC, f"unknown message class in topic: {topic[:80]!r}") from None
    return Topic(parts[1], cls)
