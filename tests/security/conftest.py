"""Fixtures of the security tests: an in-process hub next to the embedded broker, cleaned up."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hub.config import HubSettings
from hub.service import Hub

# the hand-built MQTT packets of tests/broker/raw_mqtt.py, shared rather than copied
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker"))


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Run finalizers at a safe point (amqtt leaves StreamWriters behind; see tests/sim/conftest.py)."""
    yield
    gc.collect()


@pytest.fixture
def start_hub(db_path: Path) -> Iterator[Callable[..., Hub]]:
    """Start an in-process hub against a broker port; stopped after the test."""
    hubs: list[Hub] = []

    def start(port: int, **kw: object) -> Hub:
        settings = HubSettings(db=db_path, broker=f"mqtt://127.0.0.1:{port}", presence_check_s=0.5,
                               staleness_min_s=60.0, **kw)  # type: ignore[arg-type]
        hub = Hub(settings).start(timeout=15)
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop()
