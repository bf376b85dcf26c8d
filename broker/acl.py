"""Topic authorization: which principal may publish, subscribe to, or receive which topic.

Pure functions, no broker state, so that every rule is unit-testable. Filters are
compared level by level: a grant never lets ``+`` or ``#`` in a request reach wider than
the grant itself (amqtt's own ACL plugin lets ``+`` admit ``#``; AMQTT_NOTES.md #7).
"""

from __future__ import annotations

from enum import StrEnum

from broker.registry import Role
from protocol.topics import DEVICE_PUBLISHES, DEVICE_SUBSCRIBES, ROOT, MessageClass

OPS_ROOT = "fleet"
"""Topics of the hub and operators (not of devices): ``fleet/...``."""


class Action(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


def strip_share(topic_filter: str) -> str:
    """``$share/<group>/<filter>`` -> ``<filter>`` (MQTT 5 shared subscriptions)."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return topic_filter


def filter_within(request: str, grant: str) -> bool:
    """True when every topic matched by filter ``request`` is also matched by ``grant``."""
    req = request.split("/")
    grt = grant.split("/")
    for i, g in enumerate(grt):
        if g == "#":
            return True
        if i >= len(req):
            return False
        r = req[i]
        if r == "#":
            return False  # the request reaches deeper than a non-# grant
        if g == "+":
            continue
        if r != g:  # r == "+" against a literal is wider than the grant
            return False
    return len(req) == len(grt)


def _device_topics(device_id: str, classes: tuple[MessageClass, ...]) -> tuple[str, ...]:
    return tuple(f"{ROOT}/{device_id}/{c.value}" for c in classes)


def grants(role: Role, username: str, action: Action) -> tuple[str, ...]:
    """The filters ``username`` in ``role`` may use for ``action``."""
    if role is Role.DEVICE:
        if action is Action.PUBLISH:
            return _device_topics(username, DEVICE_PUBLISHES)
        return _device_topics(username, DEVICE_SUBSCRIBES)
    if role is Role.HUB:
        return (f"{ROOT}/#", f"{OPS_ROOT}/#")
    # operator: its own request/response subtree, plus read-only fleet events and device uplinks
    own = f"{OPS_ROOT}/ops/{username}/#"
    if action is Action.PUBLISH:
        return (own,)
    uplinks = tuple(f"{ROOT}/+/{c.value}" for c in (MessageClass.TELEMETRY, MessageClass.ALERT, MessageClass.STATUS, MessageClass.REPLY))
    return (own, f"{OPS_ROOT}/events/#", *uplinks)


def is_allowed(role: Role, username: str, action: Action, topic: str) -> bool:
    """Whether ``username`` (in ``role``) may do ``action`` on ``topic`` (a topic name or filter)."""
    if action is Action.SUBSCRIBE:
        topic = strip_share(topic)
        if not topic:
            return False
    elif "+" in topic or "#" in topic:
        return False  # a topic name, never a filter, is published or received
    if topic.startswith("$"):
        return False
    return any(filter_within(topic, g) for g in grants(role, username, action))


RETAINED_CLASSES = (MessageClass.STATUS.value, MessageClass.WATERMARK.value, MessageClass.FIRMWARE_OFFER.value,
                    MessageClass.DESCRIPTION.value)
"""The device topics whose messages may be retained (firmware_protocol.md: ``s``, the hub's ``w`` and its
firmware offer ``o``, which a device that comes back must find waiting, and the device's description ``x``,
sent once and kept for the hub)."""


def may_retain(topic: str) -> bool:
    """Whether a retained PUBLISH to ``topic`` may be stored: on device topics only ``s``, ``w``, ``o`` and ``x``."""
    parts = topic.split("/")
    if parts[0] != ROOT:
        return True
    return len(parts) == 3 and parts[2] in RETAINED_CLASSES
