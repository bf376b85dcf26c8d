"""Settings of the embedded broker (flags, ``FLEET_*`` variables and TOML map onto these)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from broker.quota import Quota
from protocol.limits import LIMITS


class BrokerSettings(BaseModel):
    """Everything the embedded broker needs to start. Defaults work on a laptop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=0, le=65535)
    """TCP listener port; 0 picks a free port (see ``EmbeddedBroker.port``)."""
    ws_port: int | None = Field(None, ge=0, le=65535)
    tls_port: int | None = Field(None, ge=0, le=65535)
    certfile: Path | None = None
    keyfile: Path | None = None
    db: Path = Path("fleet.db")
    allow_anonymous: bool = False
    max_payload_bytes: int = Field(LIMITS.max_payload_bytes, ge=64)
    """Larger PUBLISH payloads from devices are dropped (amqtt has no such limit; AMQTT_NOTES.md #11)."""
    max_service_payload_bytes: int = Field(128 * 1024, ge=64)
    """The limit for the hub and operators, whose requests and answers name many devices at once."""
    keepalive_grace: float = Field(1.5, ge=1.0)
    """A client silent for keepalive x this factor is disconnected and its will fires (AMQTT_NOTES.md #2)."""
    max_connections: int = -1
    connect_timeout: float = Field(10.0, gt=0)
    """Seconds a new connection has to send its CONNECT before it is closed."""
    max_packet_bytes: int = Field(256 * 1024, ge=1024)
    """A client announcing a bigger packet is disconnected before the packet is read (AMQTT_NOTES.md #11)."""
    revocation_check_s: float = Field(2.0, gt=0)
    """How often the registry is read for principals revoked by another process (``fleet devices revoke``);
    their live connections are closed then."""
    max_queued_messages: int = Field(100_000, ge=1)
    """Messages queued per offline persistent session; beyond it the oldest is dropped and logged.

    Large by default: the hub's own persistent session queues the whole fleet's traffic while the
    hub restarts (Mosquitto's default of 1000 would drop it)."""
    device_quota: Quota = Quota()
    """Publish quota of every device (and anonymous demo client) unless the registry sets another
    (``Registry.set_quota``); the hub and operators are unlimited unless the registry says otherwise.
    Over quota, the device's socket is read more slowly; held back for ``hard_limit_s``, it is disconnected."""
    max_inflight_out: int = Field(4096, ge=1, le=65_000)
    """QoS 1 and 2 messages the broker has sent one client and not yet seen acknowledged; the rest of its
    deliveries wait, in order (AMQTT_NOTES.md #16). Above the hub's batch and queue, so acknowledging
    after each commit never starves it; far below MQTT's 65,535 packet ids."""
    max_inflight_in: int = Field(32, ge=1)
    """QoS 2 PUBLISHes one client may have awaiting PUBREL; one more closes the connection."""
    login_free_failures: int = Field(3, ge=1)
    """Failed logins per device id before it backs off (1 s, doubling up to ``login_backoff_max_s``)."""
    address_free_failures: int = Field(20, ge=1)
    """Failed (checked) logins per source address before that address backs off the same way."""
    login_backoff_max_s: float = Field(60.0, gt=0)
    """Longest back-off; a login refused during a back-off is answered after min(back-off, 2 s)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve Prometheus metrics (logins, denials, quota hits, connections) on 127.0.0.1 at this port."""
    log_summary_s: float = Field(10.0, gt=0)
    """Repeated denials, refused logins and throttling are logged once per this many seconds per
    client, then summarized with a count."""
