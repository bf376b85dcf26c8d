"""The device wire protocol: topics, payload models, codecs and limits.

This package is the code twin of ``firmware_protocol.md``. It is the bottom layer:
it imports nothing from ``broker``, ``hub``, ``device_sim`` or ``cli``.
"""

from protocol.codec import Encoding, decode, decode_command, decode_command_reply, decode_status, decode_telemetry, encode
from protocol.errors import FleetError, ProtocolError, Reason
from protocol.limits import LIMITS, Limits
from protocol.metrics import METRICS, Metric, metric_by_id, metric_by_name
from protocol.models import (
    DEVICE_REPLY_STATES,
    FINAL_COMMAND_STATES,
    Alert,
    Command,
    CommandReply,
    CommandState,
    Reading,
    Severity,
    Status,
    StatusState,
    Telemetry,
    Watermark,
)
from protocol.topics import MessageClass, Topic, parse_topic, topic_for

__all__ = [
    "DEVICE_REPLY_STATES",
    "FINAL_COMMAND_STATES",
    "LIMITS",
    "METRICS",
    "Alert",
    "Command",
    "CommandReply",
    "CommandState",
    "Encoding",
    "FleetError",
    "Limits",
    "MessageClass",
    "Metric",
    "ProtocolError",
    "Reading",
    "Reason",
    "Severity",
    "Status",
    "StatusState",
    "Telemetry",
    "Topic",
    "Watermark",
    "decode",
    "decode_command",
    "decode_command_reply",
    "decode_status",
    "decode_telemetry",
    "encode",
    "metric_by_id",
    "metric_by_name",
    "parse_topic",
    "topic_for",
]
