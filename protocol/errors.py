"""The project's error tree, rooted here because every layer imports the protocol.

    FleetError                       anything the project refuses, with a readable message
    ├── ProtocolError (ValueError)   a payload or topic that breaks firmware_protocol.md
    ├── broker.registry.RegistryError
    ├── hub.errors.HubError ...      (see each package)

The CLI turns every FleetError into one line on stderr and a non-zero exit.

The one error type of the wire protocol.

Every way a payload or topic can be wrong raises :class:`ProtocolError`, whose
:attr:`ProtocolError.reason` is one of the :class:`Reason` codes. The hub stores that
code with each dead letter, so the codes are part of the contract.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a message was refused; stored with each dead letter."""

    OVERSIZED = "oversized"
    UNDECODABLE = "undecodable"
    SCHEMA = "schema"
    UNKNOWN_METRIC = "unknown_metric"
    OUT_OF_RANGE = "out_of_range"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"


class FleetError(Exception):
    """Base of every error the project raises on purpose; the message says what to do next."""


class ProtocolError(FleetError, ValueError):
    """A payload or topic that does not follow ``firmware_protocol.md``."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
