"""Broker URLs as users type them: ``mqtt://host:port``, ``mqtts://host:port``, or ``host:port``."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from protocol.errors import FleetError


class BrokerUrlError(FleetError):
    """A broker URL that cannot be used."""


class BrokerAddress(BaseModel):
    """Where a client connects: host, port, and whether TLS is used."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL; raise :class:`BrokerUrlError` naming the problem when it is not one."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise BrokerUrlError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise BrokerUrlError(f"broker URL {url!r}: invalid port") from None
    if not parts.hostname:
        raise BrokerUrlError(f"broker URL {url!r}: no host")
    return BrokerAddress(host=parts.hostname, port=port, tls=tls)
