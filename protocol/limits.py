"""Protocol limits, shared by devices, broker and hub (see firmware_protocol.md, "Limits")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Limits(BaseModel):
    """Hard limits of the wire protocol. Messages beyond them are refused."""

    model_config = ConfigDict(frozen=True)

    max_payload_bytes: int = 4096
    """Largest PUBLISH payload a device may send; the broker drops larger ones."""
    max_readings_per_batch: int = 64
    max_offset_ms: int = 3_600_000
    """Readings in one batch span at most one hour after the message timestamp."""
    max_device_id_len: int = 32
    max_command_args: int = 16
    max_text_len: int = 256
    max_u32: int = 2**32 - 1


LIMITS = Limits()
