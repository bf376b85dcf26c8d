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
    max_command_ttl_s: int = 86_400
    """Longest command TTL the hub accepts (one day): bounds how long a device must remember an id."""
    remembered_commands: int = 32
    """Command ids a device remembers (with their final state); the hub never has more unexpired
    commands than this outstanding for one device."""
    max_resends: int = 3
    """Re-sends of one buffered message by rule R2 (the hub reported it missing although it had newer
    ones) after which a device gives it up when the hub reports it missing once more."""
    uptime_ts_below: int = 10**12
    """A ``ts`` below this (2001-09-09 as epoch ms) counts milliseconds since the device's power-up."""
    watermark_wait_s: int = 30
    """A device that has no watermark this long after its birth assumes the hub is not running."""


LIMITS = Limits()
