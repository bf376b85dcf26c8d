"""Fixtures of the conformance tests: a real embedded broker, a device login, and the checker's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conformance_helpers import FAST
from minimal_device import DeviceConfig, MinimalDevice

from broker.background import BackgroundBroker
from broker.registry import Registry, Role
from hub.conformance import CheckSettings


@pytest.fixture
def checker_settings(embedded_broker: BackgroundBroker, registry: Registry) -> Callable[..., CheckSettings]:
    """Settings for a checker run against a device on the test broker (the checker logs in with the hub role)."""
    password = registry.add("device-check", Role.HUB)

    def make(device_id: str, **kw: Any) -> CheckSettings:
        return CheckSettings(device_id=device_id, broker=f"mqtt://127.0.0.1:{embedded_broker.port}",
                             username="device-check", password=password, **(FAST | kw))

    return make


@pytest.fixture
def minimal_device(embedded_broker: BackgroundBroker, registry: Registry) -> Iterator[Callable[..., MinimalDevice]]:
    """Start minimal devices (registered, connected, birth seen by the broker); stopped after the test."""
    devices: list[MinimalDevice] = []

    def start(device_id: str = "mini-1", **kw: Any) -> MinimalDevice:
        secret = registry.add(device_id)
        cfg = DeviceConfig(host="127.0.0.1", port=embedded_broker.port, device_id=device_id, secret=secret,
                           **({"sample_s": 0.3} | kw))
        device = MinimalDevice(cfg).start()
        devices.append(device)
        return device

    yield start
    for device in devices:
        device.stop()
