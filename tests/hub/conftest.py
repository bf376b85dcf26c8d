"""Fixtures of the hub tests: a hub in-process against the embedded broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hub.service import Hub
from hub_helpers import hub_settings


@pytest.fixture
def start_hub(db_path, registry) -> Iterator[Callable[..., Hub]]:  # type: ignore[no-untyped-def]
    """Start a hub in-process against a broker port (settings overridable); stopped after the test."""
    hubs: list[Hub] = []

    def start(port: int, **kw: object) -> Hub:
        hub = Hub(hub_settings(db_path, port, **kw)).start()
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop()
