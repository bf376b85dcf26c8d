"""Settings of the hub service (flags, ``FLEET_*`` variables and TOML map onto these).

Every limit of the ingest path is a named setting with a default that works on a laptop.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from broker.credentials import read_or_create_secret
from broker.url import BrokerAddress, parse_broker_url
from hub.storage.location import side_base


class HubSettings(BaseModel):
    """Everything the hub needs to run. Defaults work on a laptop next to ``fleet broker``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    db: Path = Path("fleet.db")
    broker: str = "mqtt://127.0.0.1:1883"
    """Broker URL; ``mqtts://`` for TLS (with ``cafile``)."""
    cafile: Path | None = None
    username: str | None = "hub"
    """Login name; also the hub's registry id and MQTT client id (unless ``client_id`` is set)."""
    password: SecretStr | None = None
    """None: read (or create) the secret file next to the db and register the hub with it."""
    client_id: str | None = None
    register_hub: bool = True
    """Make sure the hub's principal exists in the registry with this password (embedded broker)."""
    keepalive: int = Field(30, ge=5)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve Prometheus metrics on http://127.0.0.1:<port>/metrics (None: off)."""

    queue_size: int = Field(5_000, ge=10)
    """Messages between paho's thread and the writer; when full, paho waits and the broker holds the rest."""
    batch_max_rows: int = Field(500, ge=1)
    """A batch is committed once it holds this many messages ..."""
    batch_max_age_s: float = Field(0.05, gt=0)
    """... or once its first message is this old, or as soon as the queue is empty."""
    skew_threshold_s: float = Field(300.0, gt=0)
    """A device timestamp further than this from the hub's clock is flagged as skewed."""
    staleness_factor: float = Field(2.5, ge=1.0)
    staleness_min_s: float = Field(5.0, ge=0.1)
    """A device silent for max(this, interval_s x staleness_factor) is marked offline."""
    presence_check_s: float = Field(1.0, gt=0)
    offline_hysteresis_s: float = Field(2.0, ge=0)
    """A will takes effect only when no birth follows within this long: a quick reconnect is counted
    as a flap, not recorded as an offline/online pair."""
    flap_window_s: float = Field(60.0, ge=0)
    """A device back online within this long of going offline counts one presence flap."""
    sleep_grace: float = Field(0.25, ge=0)
    """A sleepy device misses its wake when silent for sleep_s x (1 + this) (at least staleness_min_s more)."""
    alarms: bool = True
    """Evaluate alarm rules (``fleet rules``) in this hub (never in worker-group hubs: one engine per fleet)."""
    alarm_check_s: float = Field(1.0, gt=0)
    """How often the alarm engine ticks: rule ``for`` durations, no-data and offline rules, rule reloads."""
    alarm_flap_window_s: float = Field(300.0, ge=0)
    """An alarm raised again within this long of clearing re-opens (one more flap) instead of a new alarm."""
    retain_days: float | None = Field(None, gt=0)
    """Readings older than this are deleted (None: keep everything)."""
    retention_chunk: int = Field(1000, ge=1)
    retention_check_s: float = Field(60.0, gt=0)
    require_registered: bool = True
    """Telemetry from a device id that is not an active device in the registry is dead-lettered."""
    publish_watermarks: bool = True
    max_deadletter_bytes: int = Field(65_536, ge=64)
    """Raw payload bytes kept per dead letter (the rest is cut, and the detail says so)."""
    worker_group: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """Share the load with the other hubs of this group (``$share/<group>/...`` subscriptions; needs a
    broker that delivers shared subscriptions, e.g. Mosquitto 2 or EMQX, not the embedded one).
    Each worker then needs its own ``client_id``, the same one across its restarts."""
    adopt_after_s: float = Field(15.0, ge=2.0)
    """Worker group: a peer whose heartbeat is older than this has its broker session adopted."""

    @model_validator(mode="after")
    def _worker_needs_client_id(self) -> HubSettings:
        if self.worker_group and not self.client_id:
            raise ValueError(f"a worker of group {self.worker_group!r} needs its own client id, the same across "
                             f"restarts (e.g. --client-id hub-{self.worker_group}-1)")
        return self

    @property
    def address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)

    @property
    def mqtt_client_id(self) -> str:
        return self.client_id or self.username or "fleet-hub"

    def shared(self, topic_filter: str) -> str:
        """``topic_filter`` as this hub subscribes to it: through ``$share/<group>/`` in a worker group."""
        return f"$share/{self.worker_group}/{topic_filter}" if self.worker_group else topic_filter

    @property
    def secret_file(self) -> Path:
        base = side_base(self.db)  # beside a SQLite file; in the working folder for PostgreSQL
        return base.with_name(base.name + ".hub-secret")


def hub_password(settings: HubSettings) -> str:
    """The hub's password: from the settings, else from the secret file (created 0600 when missing)."""
    if settings.password is not None:
        return settings.password.get_secret_value()
    return read_or_create_secret(settings.secret_file)
