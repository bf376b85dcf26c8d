"""One-shot health check of a fleet: broker reachable, hub alive, ingest lag, devices online."""

from __future__ import annotations

import queue
import secrets
import socket
import ssl
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel

from hub.config import parse_broker_url
from hub.errors import HubError
from hub.overview import OverviewLoader
from hub.transport import PollingClient


class Health(BaseModel):
    broker: str
    broker_reachable: bool
    broker_detail: str = ""
    hub_alive: bool
    hub_detail: str
    ingest_lag_s: float | None
    lag_ok: bool
    devices_online: int
    devices_total: int
    healthy: bool


def probe_broker(url: str, username: str | None = None, password: str | None = None, timeout: float = 3.0,
                 cafile: str | None = None, client_id: str | None = None) -> tuple[bool, str]:
    """(reachable, why): a full MQTT CONNECT, then DISCONNECT, so the broker logs no broken connection.

    With ``username`` the probe logs in like any client (an operator account keeps the broker's
    log quiet); a broker that answers CONNECT but refuses the login is still reachable.
    """
    try:
        addr = parse_broker_url(url)
    except HubError as exc:
        return False, str(exc)
    client = PollingClient(mqtt.CallbackAPIVersion.VERSION2,
                           client_id=client_id or f"{username or 'probe'}-status-{secrets.token_hex(3)}", clean_session=True)
    if username:
        client.username_pw_set(username, password)
    if addr.tls:
        client.tls_set(ca_certs=cafile, cert_reqs=ssl.CERT_REQUIRED)
    answer: queue.Queue[Any] = queue.Queue(1)
    client.on_connect = lambda c, u, f, rc, p: answer.put(rc)
    try:
        client.connect(addr.host, addr.port, keepalive=10)
    except socket.gaierror as exc:
        return False, f"host {addr.host!r} not found ({exc.strerror or exc})"
    except (OSError, ssl.SSLError) as exc:
        return False, f"{addr.host}:{addr.port}: {getattr(exc, 'strerror', None) or exc}"
    client.loop_start()
    try:
        rc = answer.get(timeout=timeout)
    except queue.Empty:
        return False, f"{addr.host}:{addr.port} accepted TCP but sent no CONNACK within {timeout:g}s (not an MQTT broker?)"
    finally:
        client.disconnect()
        client.loop_stop()
    if rc.is_failure:
        return True, f"up; it refused the login {username!r}: {rc}" if username else f"up; {rc}"
    return True, f"up at {addr.host}:{addr.port}"


def broker_reachable(url: str, timeout: float = 2.0) -> bool:
    """True when the broker at ``url`` answers an MQTT CONNECT."""
    return probe_broker(url, timeout=timeout)[0]


def check_health(db: Path, broker: str, max_lag_s: float = 10.0, username: str | None = None,
                 password: str | None = None) -> Health:
    """Probe the broker (logging in as ``username`` when given) and read the hub's heartbeat and presence from ``db``."""
    loader = OverviewLoader(db)
    snap = loader.load()
    loader.close()
    lag = snap.summary.ingest_lag_s
    lag_ok = snap.hub_alive and (lag is None or lag <= max_lag_s)
    reachable, detail = probe_broker(broker, username, password)
    return Health(
        broker=broker, broker_reachable=reachable, broker_detail=detail, hub_alive=snap.hub_alive,
        hub_detail="heartbeat fresh" if snap.hub_alive else snap.hub_message, ingest_lag_s=lag, lag_ok=lag_ok,
        devices_online=snap.summary.online, devices_total=snap.summary.devices_total,
        healthy=reachable and snap.hub_alive and lag_ok,
    )
