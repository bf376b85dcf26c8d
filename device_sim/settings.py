"""Settings of a simulated fleet (the ``fleet sim`` flags map onto these)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from device_sim.faults import FaultKind
from device_sim.signals import Profile
from protocol.limits import LIMITS


class Behaviour(BaseModel):
    """How one profile reports: encoding, batching, report-by-exception."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoding: Literal["json", "cbor"] = "json"
    batch: int = Field(1, ge=1, le=LIMITS.max_readings_per_batch)
    """Samples buffered into one Telemetry (readings carry ``dt`` offsets)."""
    deadband: float = Field(0.0, ge=0.0)
    """Report-by-exception: a metric is sent only when it moved more than this since it was last
    sent (0 = always); every metric is sent at least once per heartbeat interval."""


class SimSettings(BaseModel):
    """Everything a :class:`~device_sim.fleet.Fleet` needs. Defaults work on a laptop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    devices: int = Field(10, ge=1, le=100_000)
    prefix: str = "sim"
    """Device ids are ``<prefix>-00001`` ... (1-based, five digits)."""
    first_index: int = Field(1, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    profile: Literal["env", "power", "gps", "mixed"] = "mixed"
    rate: float = Field(1.0, gt=0, le=1000)
    """Samples per second per device (one message per sample unless batching)."""
    duration: float | None = Field(None, gt=0)
    """Stop after this many seconds (None: until stopped)."""
    seed: int = 1
    behaviour: dict[Profile, Behaviour] = {}
    """Per profile; a profile missing here uses ``Behaviour()``."""
    heartbeat_s: int = Field(60, ge=1, le=86_400)
    """Status ``interval_s``: the device sends something at least this often."""
    sleep_s: int = Field(0, ge=0, le=604_800)
    """Sleepy devices (firmware_protocol.md 4.5): declare this ``sleep_s`` in the birth and, after
    ``wake_ticks`` ticks and their watermark, disconnect and sleep ``sleep_s x sleep_fraction`` (0: never sleep)."""
    wake_ticks: int = Field(2, ge=1)
    sleep_fraction: float = Field(0.5, gt=0, le=10)
    """Above 1 the devices oversleep: they miss their declared wake (to test the hub)."""
    keepalive: int = Field(60, ge=0, le=65_535)
    fw: str = "sim-1.0.0"
    buffer_size: int = Field(256, ge=1)
    """Store-and-forward: messages kept per device until covered by a watermark (full: the oldest is
    dropped and declared to the hub)."""
    rtc: bool = True
    """The devices have a clock; without one they stamp uptime and learn the time from the hub."""
    connect_concurrency: int = Field(64, ge=1)
    """CONNECTs in flight at once (a thundering herd of 10,000 logins overwhelms small brokers)."""
    connect_timeout: float = Field(30.0, gt=0)
    reconnect_delay: float = Field(1.0, ge=0)
    faults: dict[FaultKind, float] = {}
    fault_start_s: float = Field(1.0, ge=0)
    fault_every: int = Field(5, ge=1)
    storm_period_s: float = Field(2.0, gt=0)
    clock_skew_h: float = 3.0
    bad_login_retry_s: float = Field(5.0, gt=0)
    ledger: Path | None = None
    alerts: bool = False
    """Send an alert when a reading crosses its profile's thresholds (battery low, overload, overspeed)."""
    anonymous: bool = False
    """Log in without username and password (benchmarks against brokers that allow anonymous access)."""

    def behaviour_for(self, profile: Profile) -> Behaviour:
        return self.behaviour.get(profile, Behaviour())


