"""Fixtures of the reliability tests: hubs in-process or as ``fleet hub`` subprocesses, cleaned up."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_harness import HubSubprocess

from hub.config import HubSettings
from hub.service import Hub


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Run finalizers at a safe point (amqtt leaves StreamWriters behind; see tests/sim/conftest.py)."""
    yield
    gc.collect()


@pytest.fixture
def hub_subprocess(db_path: Path) -> Iterator[Callable[..., HubSubprocess]]:
    """Make ``fleet hub`` subprocesses against a broker port; all stopped after the test."""
    procs: list[HubSubprocess] = []

    def make(port: int, *extra: str) -> HubSubprocess:
        hp = HubSubprocess(db_path, port, *extra)
        procs.append(hp)
        return hp

    yield make
    for hp in procs:
        hp.stop()


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
