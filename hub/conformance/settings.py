"""Settings of a conformance run: who to check, how to log in, and how long to wait for what."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from protocol.topics import DEVICE_ID_RE


class CheckSettings(BaseModel):
    """One run of ``fleet device-check``. Timeouts are generous: a busy CI machine is slow, not broken."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str = Field(pattern=DEVICE_ID_RE.pattern)
    broker: str = "mqtt://127.0.0.1:1883"
    username: str = "device-check"
    """A login with the hub role (only that role may publish on a device's ``c`` and ``w``)."""
    password: SecretStr
    cafile: str | None = None
    timeout_s: float = Field(30.0, gt=0)
    """How long to wait for each thing the device must do (a reply, a birth, a re-send)."""
    hold_s: float = Field(15.0, gt=0)
    """How long watermarks are withheld while the checker watches for timed re-sends (section 5.3)."""
    messages: int = Field(3, ge=1, le=64)
    """How many new messages the device must send while watermarks are withheld."""
    hub_answer_s: float = Field(3.0, gt=0)
    """After a birth, how long to wait for a running hub's watermark answer (to tell whether one runs)."""
    hold_lease_s: float = Field(30.0, gt=0, le=300.0)
    """With a hub running: the lease of the checker's hold on its watermarks (renewed every third of it)."""
    max_sleep_s: float = Field(900.0, gt=0)
    """A sleepy device's wake cycle (section 4.5) is watched when its ``sleep_s`` is at most this (the run then lasts
    up to about 2.5 x ``sleep_s``)."""
    expired_by_s: float = Field(600.0, gt=0)
    """The expiry scenario's command expired this long ago (more than any sane clock error)."""
