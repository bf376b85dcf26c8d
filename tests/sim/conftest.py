"""Fixtures of the simulator tests: a hub-role subscriber on the embedded broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sim_helpers import HubSubscriber

from broker.registry import Registry


@pytest.fixture
def hub(embedded_broker: Any, registry: Registry) -> Iterator[HubSubscriber]:
    sub = HubSubscriber(embedded_broker.port, registry)
    yield sub
    sub.close()
