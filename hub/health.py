"""One-shot health check of a fleet: broker reachable, hub alive, ingest lag, devices online."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import BaseModel

from hub.config import parse_broker_url
from hub.errors import HubError
from hub.overview import OverviewLoader


class Health(BaseModel):
    broker: str
    broker_reachable: bool
    hub_alive: bool
    hub_detail: str
    ingest_lag_s: float | None
    lag_ok: bool
    devices_online: int
    devices_total: int
    healthy: bool


def broker_reachable(url: str, timeout: float = 2.0) -> bool:
    """True when a TCP connection to the broker URL's host and port succeeds."""
    try:
        addr = parse_broker_url(url)
    except HubError:
        return False
    try:
        socket.create_connection((addr.host, addr.port), timeout=timeout).close()
    except OSError:
        return False
    return True


def check_health(db: Path, broker: str, max_lag_s: float = 10.0) -> Health:
    """Probe the broker and read the hub's heartbeat and presence from ``db``."""
    loader = OverviewLoader(db)
    snap = loader.load()
    loader.close()
    lag = snap.summary.ingest_lag_s
    lag_ok = snap.hub_alive and (lag is None or lag <= max_lag_s)
    reachable = broker_reachable(broker)
    return Health(
        broker=broker, broker_reachable=reachable, hub_alive=snap.hub_alive,
        hub_detail="heartbeat fresh" if snap.hub_alive else snap.hub_message, ingest_lag_s=lag, lag_ok=lag_ok,
        devices_online=snap.summary.online, devices_total=snap.summary.devices_total,
        healthy=reachable and snap.hub_alive and lag_ok,
    )
